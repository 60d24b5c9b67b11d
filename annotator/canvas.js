// maskloop's labeling canvas: the body of gr.HTML's js_on_load (element, props, trigger, watch, server).
// The browser draws the image and the instances (masks from COCO RLE crops, boxes, keypoints), hit-tests,
// zooms and pans by itself; every edit travels to the server as one small message (a direct server-function
// call, server.canvas_edit, applied by annotator/canvas.py apply()); the answer, like every label event's
// new props.value, and the server's answer (props.value) is what is drawn next.
// How a stroke becomes a mask: Stroke below collects the pointer path in image pixels; canvas.py's _stroke
// hands it to LabelSession.paint.
// Two browsers on one image: a notice says who else has it open (server.canvas_presence, polled), and after a
// refused save the list shows "Your refused edits" (props.value.pending) next to theirs, hatched on the picture.

const TOOLS = [
  ['select', 'v', 'select; drag a box handle, polygon vertex or keypoint of the selected instance; drag empty space to pan'],
  ['brush', 'b', 'brush: drag to paint the selected mask ([ and ] size); with nothing selected, a new instance'],
  ['eraser', 'e', 'eraser: drag to erase from the selected mask ([ and ] size)'],
  ['polygon', 'g', 'polygon: click vertices; click the first vertex or Enter closes, Escape cancels'],
  ['box', 'm', 'box: drag a new box for the selected instance'],
  ['keypoint', 'k', 'keypoint: click to place the chosen keypoint of the selected instance'],
  ['assist', 'x', 'assist: drag a rough box around an object (or click it): the model finds it'],
];
const root = element.querySelector('.mlc-root');
root.innerHTML = `
<div class="mlc-bar">
  <span class="mlc-tools">${TOOLS.map(([t, k, h]) =>
    `<button type="button" data-tool="${t}" title="${h}">${t} <kbd>${k}</kbd></button>`).join('')}</span>
  <label title="the selected instance's class (changing it sets it); with nothing selected, the class of a new
    instance (brush, polygon, assist; for assist, blank lets the model decide)"><span class="mlc-class-l">class</span>
    <select class="mlc-class"></select></label>
  <label class="mlc-polywrap">polygon <select class="mlc-polymode">
    <option value="auto">add to selected / new</option><option value="new">new instance</option>
    <option value="add">add to selected</option><option value="subtract">subtract from selected</option></select></label>
  <label class="mlc-kpwrap">keypoint <select class="mlc-kp"></select></label>
  <label title="hide proposals scoring below this">min score <input type="range" class="mlc-score" min="0" max="1"
    step="0.05" value="0"> <span class="mlc-score-v">0.00</span></label>
  <label>opacity <input type="range" class="mlc-opacity" min="0" max="1" step="0.05" value="0.5"></label>
  <button type="button" class="mlc-fit" title="fit the image (f)">fit <kbd>f</kbd></button>
  <button type="button" class="mlc-one" title="one image pixel per screen pixel (1)">1:1 <kbd>1</kbd></button>
</div>
<div class="mlc-info"></div>
<div class="mlc-presence" role="status"></div>
<div class="mlc-main"><div class="mlc-stage"><canvas class="mlc-canvas"></canvas></div>
  <div class="mlc-list" title="instances: click one to select it"></div></div>
<div class="mlc-message" role="status"></div>
<div class="mlc-verdict"></div>
<details class="mlc-history"><summary></summary><ol></ol></details>
<div class="mlc-status"><span class="mlc-pos"></span><span class="mlc-zoom"></span><span class="mlc-busy"></span><span class="mlc-hint"></span></div>`;

const canvas = root.querySelector('canvas');
const ctx = canvas.getContext('2d');
const $ = (sel) => root.querySelector(sel);
const HANDLE = 7;  // screen pixels within which a handle is grabbed
const S = {
  data: null, byIndex: new Map(), imageId: null, levels: [], loading: 0, prefetched: null, layer: null,
  view: {s: 1, tx: 0, ty: 0}, tool: 'select', newClass: '', radius: 10, minScore: 0, opacity: 0.5,
  selected: null, hover: null, hoverKp: null, over: false, space: false,
  seq: 0, rev: 0, afterFrame: [], reviewed: [], sentAt: new Map(), answered: [], outbox: [], inflight: null, whenIdle: [], masks: new Map(), drag: null, poly: [], strokes: [], pointer: null,
  timings: [], inputAt: null, inputKind: null, frames: 0, fitted: false,
  pending: [], hoverItem: null, pickedItem: null, presence: [], polling: false,
};
root.__maskloop = S;  // tests and bench/canvas.py read timings and state here

// --- small helpers --------------------------------------------------------------------------------------
const toImage = (sx, sy) => [(sx - S.view.tx) / S.view.s, (sy - S.view.ty) / S.view.s];
const toScreen = (x, y) => [x * S.view.s + S.view.tx, y * S.view.s + S.view.ty];
const inst = (i) => (i == null ? null : S.byIndex.get(i) || null);
const cat = (it) => (it && S.data ? S.data.categories[String(it.category_id)] : null);
function shown(it) {  // as LabelSession.visible: low-score model proposals hide, accepted ones always show
  return !(it.source === 'model' && it.state !== 'accepted' && it.score != null && it.score < S.minScore);
}
const drawn = () => (S.data ? S.data.instances.filter((it) => shown(it) && it.state !== 'rejected') : []);
function rgb(hex) { return [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16)); }
function kpSide(name) { return /^left|_left|^l_/i.test(name) ? '#3b82f6' : /^right|_right|^r_/i.test(name) ? '#f97316' : '#22c55e'; }

// --- masks: COCO compressed RLE of the mask's bounding crop, decoded once per mask ------------------------
function rleRuns(s) {  // pycocotools' rleFrString: 5-bit groups, 0x20 = more, sign at 0x10, delta from m-2
  const cnts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1, c = 0;
    while (more) {
      c = s.charCodeAt(p) - 48; x |= (c & 0x1f) << (5 * k); more = c & 0x20; p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (cnts.length > 2) x += cnts[cnts.length - 2];
    cnts.push(x);
  }
  return cnts;
}
function decodeMask(m) {  // -> row-major Uint8Array of the crop (column-major runs, as COCO stores them)
  const inside = new Uint8Array(m.w * m.h);
  let p = 0, on = 0;
  for (const run of rleRuns(m.counts)) {
    if (on) {
      let x = Math.floor(p / m.h), y = p - x * m.h;
      for (let q = 0; q < run; q++) {
        inside[y * m.w + x] = 1;
        if (++y === m.h) { y = 0; x++; }
      }
    }
    p += run; on ^= 1;
  }
  return inside;
}
function paintCrop(it, entry, put) {  // a canvas of the mask's crop; put(d, o, x, y, edge) colours pixel o
  const m = it.mask, inside = entry.inside;
  const c = document.createElement('canvas');
  c.width = m.w; c.height = m.h;
  const im = new ImageData(m.w, m.h), d = im.data;
  for (let y = 0; y < m.h; y++) {
    for (let x = 0; x < m.w; x++) {
      const k = y * m.w + x;
      if (!inside[k]) continue;
      const edge = x === 0 || y === 0 || x === m.w - 1 || y === m.h - 1 || !inside[k - 1] || !inside[k + 1] ||
        !inside[k - m.w] || !inside[k + m.w];
      put(d, 4 * k, x, y, edge);
    }
  }
  c.getContext('2d').putImageData(im, 0, 0);
  return c;
}
function paintMask(it, entry) {  // the mask in its colour: filled, outlined; proposals lighter and dashed
  const [r, g, b] = rgb(it.color), proposed = it.state === 'proposed', fill = proposed ? 70 : 140;
  return paintCrop(it, entry, (d, o, x, y, edge) => {
    d[o] = r; d[o + 1] = g; d[o + 2] = b;
    d[o + 3] = edge ? (proposed && ((x + y) >> 2) & 1 ? fill : 255) : fill;
  });
}
function paintHatch(it, entry) {  // a refused edit's mask: an outline of colour and white dashes, hatched inside
  const [r, g, b] = rgb(it.color);
  return paintCrop(it, entry, (d, o, x, y, edge) => {
    if (!edge && (((x - y) % 6) + 6) % 6 > 1) return;  // between the hatch lines: see-through
    const light = edge && ((x + y) >> 1) & 1;
    d[o] = light ? 255 : r; d[o + 1] = light ? 255 : g; d[o + 2] = light ? 255 : b;
    d[o + 3] = edge ? 255 : 170;
  });
}
function insideOf(it) {  // {inside, painted}: the crop decoded once, cached by its content and colour
  if (!it.mask) return null;
  const key = `${it.color}|${it.mask.x},${it.mask.y},${it.mask.w},${it.mask.h}|${it.mask.counts}`;
  let e = S.masks.get(key);
  if (!e) { e = {inside: decodeMask(it.mask), painted: {}}; S.masks.set(key, e); }
  e.used = true;
  return e;
}
function maskOf(it) {  // insideOf, with the mask painted in the instance's style
  const e = insideOf(it);
  if (!e) return null;
  const style = it.kind ? 'h' : it.state === 'proposed' ? 'p' : 'a';  // (a refused edit has a kind)
  if (!e.painted[style]) e.painted[style] = style === 'h' ? paintHatch(it, e) : paintMask(it, e);
  return e;
}
function contains(it, x, y) {
  if (it.mask) {
    const [bx, by, bw, bh] = it.bbox;
    if (x < bx || y < by || x > bx + bw || y > by + bh) return false;  // (most instances: no decoding)
    const e = insideOf(it), xi = Math.floor(x) - it.mask.x, yi = Math.floor(y) - it.mask.y;
    return xi >= 0 && yi >= 0 && xi < it.mask.w && yi < it.mask.h && e.inside[yi * it.mask.w + xi] === 1;
  }
  const [bx, by, bw, bh] = it.bbox;
  return x >= bx && x <= bx + bw && y >= by && y <= by + bh;
}
function hitTest(x, y) {  // the smallest drawn instance under the point
  let best = null;
  for (const it of drawn()) if (contains(it, x, y) && (!best || it.area < best.area)) best = it;
  return best ? best.i : null;
}

// --- the image: decoded off the main thread, with smaller copies for zoomed-out views ---------------------
async function decodePicture(imageId) {  // the image's pixels as a bitmap, decoded off the main thread
  const pic = await server.canvas_image(imageId);
  if (pic && pic.image_id !== imageId) return null;
  if (!pic || pic.error) throw new Error((pic && pic.error) || `image ${imageId} cannot be shown: the server failed (see its log)`);
  const blob = await (await fetch(pic.url)).blob();
  return createImageBitmap(blob);
}
async function halves(full, stillWanted) {  // smaller copies, for drawing a big image small without a long task
  const out = [];
  let w = full.width, h = full.height, f = 1;
  while (Math.max(w, h) > 1024) {
    w = Math.max(1, Math.round(w / 2)); h = Math.max(1, Math.round(h / 2)); f /= 2;
    const bmp = await createImageBitmap(full, {resizeWidth: w, resizeHeight: h, resizeQuality: 'medium'});
    if (!stillWanted()) return null;
    out.push({s: f, bmp});
  }
  return out;
}
function prefetch(ids) {  // the next image in the queue, decoded (with its smaller copies) while this one is labeled
  const id = ids && ids.length ? ids[0] : null;
  if (id == null || id === S.imageId || (S.prefetched && S.prefetched.id === id)) return;
  const mine = {id};
  mine.levels = decodePicture(id).then(async (full) => {
    if (!full) return null;
    const rest = await halves(full, () => S.prefetched === mine);
    return rest ? [{s: 1, bmp: full}].concat(rest) : null;
  }).catch(() => null);
  S.prefetched = mine;
}
async function loadImage(imageId) {
  const token = ++S.loading;
  S.levels = [];
  S.fitted = false;
  if (S.prefetched && S.prefetched.id === imageId) {  // decoded while the last image was labeled
    const levels = await S.prefetched.levels;
    S.prefetched = null;
    if (token !== S.loading) return;
    if (levels) {
      S.levels = levels;
      fit();
      requestDraw();
      if (S.data) prefetch(S.data.next);
      return;
    }
  }
  let full = null;
  try {
    full = await decodePicture(imageId);
  } catch (err) {  // said where the labels' messages go: the picture stays empty, never silently
    if (token === S.loading) $('.mlc-message').textContent = String(err.message || err);
    return;
  }
  if (token !== S.loading || !full) return;
  S.levels = [{s: 1, bmp: full}];
  fit();
  const rest = await halves(full, () => token === S.loading);
  if (!rest) return;
  S.levels = S.levels.concat(rest);
  requestDraw();
  if (S.data) prefetch(S.data.next);
}
function imageLevel() {  // the smallest copy with at least one pixel per screen pixel
  let best = S.levels[0];
  for (const lv of S.levels) if (lv.s >= S.view.s * (window.devicePixelRatio || 1)) best = lv;
  return best;
}

// --- view ------------------------------------------------------------------------------------------------
function size() {
  const stage = $('.mlc-stage'), top = stage.getBoundingClientRect().top + window.scrollY;
  const free = Math.max(320, Math.round(window.innerHeight - top - 60)) + 'px';  // the canvas takes the free height
  if (stage.style.height !== free) { stage.style.height = free; $('.mlc-list').style.height = free; }
  const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  return [r.width, r.height];
}
function fit() {
  if (!S.data) return;
  const [W, H] = size();
  const s = Math.min(W / S.data.width, H / S.data.height) * 0.98;
  S.view = {s, tx: (W - S.data.width * s) / 2, ty: (H - S.data.height * s) / 2};
  S.fitted = true;
  requestDraw();
}
function zoomAt(sx, sy, s) {
  s = Math.min(64, Math.max(0.01, s));
  const [x, y] = toImage(sx, sy);
  S.view = {s, tx: sx - x * s, ty: sy - y * s};
  requestDraw();
}
function oneToOne() {
  const [W, H] = size();
  const p = S.pointer || {x: W / 2, y: H / 2};
  zoomAt(p.x, p.y, 1 / (window.devicePixelRatio || 1));
}

// --- drawing ---------------------------------------------------------------------------------------------
let drawPending = false;
function requestDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}
function boxOf(it) {  // xyxy, live while its handles are dragged
  if (S.drag && S.drag.kind === 'handle' && S.drag.index === it.i) return S.drag.box;
  const [x, y, w, h] = it.bbox;
  return [x, y, x + w, y + h];
}
function keypointsOf(it) {
  if (S.drag && S.drag.kind === 'kp' && S.drag.index === it.i) return S.drag.kps;
  return it.keypoints;
}
function polygonsOf(it) {
  if (S.drag && S.drag.kind === 'vertex' && S.drag.index === it.i) return S.drag.polygons;
  return it.polygons;
}
function draw() {
  const [W, H] = size(), dpr = window.devicePixelRatio || 1, {s, tx, ty} = S.view;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = '#1e1e1e';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!S.data) return finishDraw();
  ctx.setTransform(s * dpr, 0, 0, s * dpr, tx * dpr, ty * dpr);
  const lv = imageLevel();
  if (lv) {
    ctx.imageSmoothingEnabled = s * dpr < 2;
    ctx.drawImage(lv.bmp, 0, 0, S.data.width, S.data.height);
  }
  ctx.imageSmoothingEnabled = false;
  const list = drawn(), many = list.length > MANY;
  if (many) {  // one cached layer of every mask, then the selected and hovered ones on top
    ctx.drawImage(layerOf(list).canvas, 0, 0, S.data.width, S.data.height);
  }
  for (const it of many ? [inst(S.hover), inst(S.selected)].filter((x) => x && shown(x)) : list) {
    const e = maskOf(it);
    if (!e) continue;
    const emph = it.i === S.selected ? 1.8 : it.i === S.hover ? 1.4 : 1;
    ctx.globalAlpha = Math.min(1, S.opacity * 2 * emph * (it.i === S.selected ? 1 : 0.85));
    ctx.drawImage(e.painted[it.state === 'proposed' ? 'p' : 'a'], it.mask.x, it.mask.y);
  }
  for (const p of S.pending) {  // this person's refused edits, hatched over the labels saved meanwhile
    const e = p.kind !== 'deleted' && maskOf(p);
    if (!e) continue;
    ctx.globalAlpha = hotItem(p) ? 1 : 0.75;
    ctx.drawImage(e.painted.h, p.mask.x, p.mask.y);
  }
  ctx.globalAlpha = 0.55;
  for (const st of S.strokes.concat(S.drag && S.drag.kind === 'stroke' ? [S.drag] : [])) {  // strokes not yet applied
    ctx.strokeStyle = st.erase ? '#000000' : (inst(st.index) || {color: '#ffffff'}).color;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = 2 * st.r; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
    ctx.beginPath();
    st.pts.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (st.pts.length === 1) { ctx.arc(st.pts[0][0], st.pts[0][1], st.r, 0, 2 * Math.PI); ctx.fill(); } else ctx.stroke();
  }
  ctx.globalAlpha = 1;
  // everything below is drawn in screen pixels, so lines and labels stay readable at any zoom
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.font = '12px sans-serif';
  let tags = 0;
  for (const it of list) {
    const [x0, y0, x1, y1] = boxOf(it), [a, b] = toScreen(x0, y0), [c, d] = toScreen(x1, y1);
    const sel = it.i === S.selected;
    if (many && !sel && it.i !== S.hover && (c < 0 || d < 0 || a > W || b > H || (c - a < 3 && d - b < 3))) continue;
    ctx.setLineDash(it.state === 'proposed' ? [6, 4] : []);
    ctx.lineWidth = sel ? 3 : it.i === S.hover ? 2 : 1.5;
    ctx.strokeStyle = it.color;
    ctx.strokeRect(a, b, c - a, d - b);
    if (sel) { ctx.setLineDash([]); ctx.lineWidth = 1; ctx.strokeStyle = '#ffffff'; ctx.strokeRect(a - 2, b - 2, c - a + 4, d - b + 4); }
    ctx.setLineDash([]);
    drawKeypoints(it, sel);
    if (many && !sel && it.i !== S.hover && (c - a < TAG_MIN || ++tags > MAX_TAGS)) continue;  // unreadable crowds
    const label = `#${it.i} ${it.name}` + (it.score != null && it.state === 'proposed' ? ` ${it.score.toFixed(2)}` : '') +
      (it.state === 'accepted' ? ' ✓' : '');
    const tw = ctx.measureText(label).width;
    ctx.fillStyle = 'rgba(0,0,0,0.6)';
    ctx.fillRect(a, Math.max(0, b - 15), tw + 6, 15);
    ctx.fillStyle = it.color;
    ctx.fillText(label, a + 3, Math.max(11, b - 4));
  }
  drawRefused();
  const sel = inst(S.selected);
  if (sel && shown(sel)) drawHandles(sel);
  drawGesture();
  finishDraw();
}
const MAX_BRUSH = 1024;  // image pixels: the server's limit on a brush's radius (annotator.labeling)
const MANY = 400;  // more instances drawn than this: masks from one cached layer, boxes culled, fewer tags
const TAG_MIN = 40, MAX_TAGS = 200;  // with many instances: a tag only on a box this wide, at most this many
const LAYER_PIXELS = 16e6;  // the layer's size at most (a larger image's layer is scaled down)
function layerOf(list) {  // every drawn mask in one bitmap, rebuilt only when the labels or the view's filters change
  const key = `${S.data.image_id}|${S.rev}|${S.opacity}|${S.minScore}|${S.reviewed.map((r) => r.i + r.state).join()}`;
  if (S.layer && S.layer.key === key) return S.layer;
  const W = S.data.width, H = S.data.height, f = Math.min(1, Math.sqrt(LAYER_PIXELS / (W * H)));
  const lw = Math.max(1, Math.round(W * f)), lh = Math.max(1, Math.round(H * f));
  const im = new ImageData(lw, lh), d = im.data;
  for (const it of list) {
    const e = insideOf(it);
    if (!e) continue;
    const m = it.mask, [r, g, b] = rgb(it.color);
    const a = Math.round(Math.min(1, S.opacity * 2 * 0.85) * (it.state === 'proposed' ? 70 : 140));
    for (let y = 0; y < m.h; y++) {
      const ly = Math.min(lh - 1, Math.floor((m.y + y) * f));
      for (let x = 0; x < m.w; x++) {
        if (!e.inside[y * m.w + x]) continue;
        const o = 4 * (ly * lw + Math.min(lw - 1, Math.floor((m.x + x) * f)));
        d[o] = r; d[o + 1] = g; d[o + 2] = b; d[o + 3] = a;
      }
    }
  }
  const canvas2 = document.createElement('canvas');
  canvas2.width = lw; canvas2.height = lh;
  canvas2.getContext('2d').putImageData(im, 0, 0);
  S.layer = {key, canvas: canvas2};
  return S.layer;
}
function hotItem(p) {  // a refused edit pointed at in the list, or whose instance is pointed at on the picture
  const j = p.theirs ? p.theirs.i : null;
  return p.item === S.hoverItem || p.item === S.pickedItem || (j != null && (j === S.hover || j === S.selected));
}
function drawRefused() {  // boxes of the refused edits, dashed finer than proposals; a deletion crosses theirs out
  for (const p of S.pending) {
    const hot = hotItem(p), them = p.kind === 'deleted' && p.theirs ? inst(p.theirs.i) : null;
    const [x, y, w, h] = them ? them.bbox : p.bbox;
    if (p.kind === 'deleted' && !them) continue;
    const [a, b] = toScreen(x, y), [c, d] = toScreen(x + w, y + h);
    ctx.strokeStyle = them ? '#ff4d4d' : p.color;
    ctx.lineWidth = hot ? 2.5 : 1.5;
    ctx.setLineDash([2, 3]);
    ctx.strokeRect(a, b, c - a, d - b);
    if (them) { ctx.beginPath(); ctx.moveTo(a, b); ctx.lineTo(c, d); ctx.moveTo(c, b); ctx.lineTo(a, d); ctx.stroke(); }
    ctx.setLineDash([]);
    const label = `yours: ${them ? 'deleted' : p.name}` + (hot ? ' (refused)' : '');
    const tw = ctx.measureText(label).width;
    ctx.fillStyle = hot ? 'rgba(0,0,0,0.85)' : 'rgba(0,0,0,0.6)';
    ctx.fillRect(a, d, tw + 6, 15);
    ctx.fillStyle = them ? '#ff8080' : p.color;
    ctx.fillText(label, a + 3, d + 11);
  }
}
function drawKeypoints(it, sel) {
  const k = keypointsOf(it), c = cat(it);
  if (!k || !c) return;
  ctx.lineWidth = 2;
  for (const [p, q] of c.skeleton || []) {
    if (p < 1 || q < 1 || 3 * q > k.length || 3 * p > k.length || !k[3 * p - 1] || !k[3 * q - 1]) continue;
    const [a, b] = toScreen(k[3 * p - 3], k[3 * p - 2]), [e, f] = toScreen(k[3 * q - 3], k[3 * q - 2]);
    ctx.strokeStyle = it.color;
    ctx.beginPath(); ctx.moveTo(a, b); ctx.lineTo(e, f); ctx.stroke();
  }
  for (let j = 0; 3 * j < k.length; j++) {
    if (!k[3 * j + 2]) continue;
    const [a, b] = toScreen(k[3 * j], k[3 * j + 1]), name = (c.keypoints || [])[j] || String(j);
    ctx.fillStyle = k[3 * j + 2] === 2 ? kpSide(name) : '#777777';
    ctx.strokeStyle = sel ? '#ffffff' : '#000000';
    ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.arc(a, b, sel ? 5 : 3.5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    if (S.hoverKp && S.hoverKp.index === it.i && S.hoverKp.j === j) {
      ctx.fillStyle = 'rgba(0,0,0,0.7)';
      const label = name + (k[3 * j + 2] === 1 ? ' (occluded)' : '');
      ctx.fillRect(a + 7, b - 8, ctx.measureText(label).width + 6, 16);
      ctx.fillStyle = '#ffffff';
      ctx.fillText(label, a + 10, b + 4);
    }
  }
}
function boxHandles(box) {
  const [x0, y0, x1, y1] = box, mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
  return {nw: [x0, y0], n: [mx, y0], ne: [x1, y0], e: [x1, my], se: [x1, y1], s: [mx, y1], sw: [x0, y1], w: [x0, my]};
}
function drawHandles(it) {
  ctx.fillStyle = '#ffffff';
  ctx.strokeStyle = '#000000';
  ctx.lineWidth = 1;
  for (const [x, y] of Object.values(boxHandles(boxOf(it)))) {
    const [a, b] = toScreen(x, y);
    ctx.fillRect(a - 4, b - 4, 8, 8); ctx.strokeRect(a - 4, b - 4, 8, 8);
  }
  const polys = polygonsOf(it);
  if (polys) {
    ctx.fillStyle = it.color;
    for (const poly of polys) {
      for (let v = 0; v + 1 < poly.length; v += 2) {
        const [a, b] = toScreen(poly[v], poly[v + 1]);
        ctx.beginPath(); ctx.arc(a, b, 3.5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      }
    }
  }
}
function drawGesture() {
  if (S.poly.length) {  // the polygon being drawn, its vertices as handles
    ctx.strokeStyle = '#ffff00'; ctx.fillStyle = '#ffff00'; ctx.lineWidth = 1.5;
    ctx.beginPath();
    S.poly.forEach(([x, y], k) => { const [a, b] = toScreen(x, y); if (k) ctx.lineTo(a, b); else ctx.moveTo(a, b); });
    if (S.pointer) ctx.lineTo(S.pointer.x, S.pointer.y);
    ctx.stroke();
    S.poly.forEach(([x, y], k) => {
      const [a, b] = toScreen(x, y);
      ctx.beginPath(); ctx.arc(a, b, k === 0 ? 6 : 4, 0, 2 * Math.PI); ctx.fill();
    });
  }
  if (S.drag && S.drag.kind === 'rect') {
    const [a, b] = toScreen(S.drag.x0, S.drag.y0), [c, d] = toScreen(S.drag.x1, S.drag.y1);
    ctx.setLineDash([5, 3]); ctx.strokeStyle = S.tool === 'assist' ? '#00ffff' : '#ffff00'; ctx.lineWidth = 2;
    ctx.strokeRect(a, b, c - a, d - b); ctx.setLineDash([]);
  }
  if ((S.tool === 'brush' || S.tool === 'eraser') && S.pointer && S.over) {
    ctx.strokeStyle = S.tool === 'eraser' ? '#ff5555' : '#ffffff'; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.arc(S.pointer.x, S.pointer.y, S.radius, 0, 2 * Math.PI); ctx.stroke();
  }
}
function finishDraw() {
  S.frames++;
  if (S.inputAt != null) {  // a local action: from the input event to this drawn frame
    S.timings.push({kind: S.inputKind, ms: performance.now() - S.inputAt});
    S.inputAt = null;
  }
  if (S.answerPending) { S.answerPending = false; S.answerDrawnAt = performance.now(); }
  if (S.afterFrame.length) { const later = S.afterFrame; S.afterFrame = []; setTimeout(() => later.forEach((fn) => fn()), 0); }
  for (const a of S.answered) S.timings.push({kind: 'server:' + a.op, ms: performance.now() - a.t, seq: a.seq, wire: a.got - a.t});
  S.answered = [];
  $('.mlc-zoom').textContent = S.data ? `zoom ${(S.view.s * 100).toFixed(S.view.s < 0.1 ? 1 : 0)}%` : '';
  $('.mlc-busy').textContent = S.sentAt.size ? 'saving…' : '';
}
function local(kind) { S.inputAt = performance.now(); S.inputKind = kind; requestDraw(); }

// --- messages to the server ------------------------------------------------------------------------------
function send(op, fields) {  // one message at a time, in order: the next leaves when the last is answered
  const seq = ++S.seq;
  S.sentAt.set(seq, {t: performance.now(), op});
  S.outbox.push(Object.assign({op, seq, min_score: S.minScore}, fields || {}));
  pump();
  requestDraw();
  return seq;
}
function pump() {
  if (S.inflight) return;
  const msg = S.outbox.shift();
  if (!msg) { const idle = S.whenIdle; S.whenIdle = []; idle.forEach((fn) => fn()); return; }
  S.inflight = msg.seq;
  setTimeout(() => {  // no answer (the server failed: Gradio shows its error): do not block the next edits
    if (S.inflight === msg.seq) { S.inflight = null; S.sentAt.delete(msg.seq); hint('the server did not answer that edit'); pump(); }
  }, 20000);
  const failed = (why) => {  // the picture and the labels stay as they are; the person is told
    if (S.inflight === msg.seq) { S.inflight = null; S.sentAt.delete(msg.seq); pump(); }
    hint(why);
  };
  server.canvas_edit(Object.assign({token: S.data ? S.data.token : ''}, msg)).then((data) => {
    if (data && typeof data === 'object') receive(data);
    else failed('that edit got no answer (logged out in another tab, or the server failed): reload the page');
  }).catch((err) => failed('that edit failed on the server: ' + err));
}
function whenIdle(fn) {  // after every queued edit is answered (saving, moving on)
  if (!S.inflight && !S.outbox.length) fn(); else S.whenIdle.push(fn);
}
function hint(text) { $('.mlc-hint').textContent = text; }
function chosenClass() { return S.newClass === '' ? null : Number(S.newClass); }
function select(i, tell = true) {
  S.selected = i;
  refreshToolbar(false);
  local('select');
  if (tell) S.afterFrame.push(() => send('select', {index: i}));  // the server hears of it after the frame
}

// --- toolbar ---------------------------------------------------------------------------------------------
function setTool(t) {
  S.tool = t;
  if (t !== 'polygon') S.poly = [];
  root.querySelectorAll('[data-tool]').forEach((b) => b.classList.toggle('on', b.dataset.tool === t));
  $('.mlc-polywrap').style.display = t === 'polygon' ? '' : 'none';
  showKeypointChoice();
  hint((TOOLS.find((x) => x[0] === t) || [, , ''])[2]);
  canvas.style.cursor = t === 'select' ? 'default' : 'crosshair';
  requestDraw();
}
function showKeypointChoice() {  // only for a selected instance whose class has keypoints
  const c = cat(inst(S.selected)), any = !!(c && c.keypoints && c.keypoints.length);
  $('.mlc-kpwrap').style.display = any && (S.tool === 'keypoint' || S.tool === 'select') ? '' : 'none';
}
function refreshToolbar(rebuildList = true) {
  const cls = $('.mlc-class'), kp = $('.mlc-kp'), it = inst(S.selected);
  if (S.data) {
    const want = Object.entries(S.data.categories).map(([id, c]) => id + ':' + c.name).join('|');
    if (cls.dataset.cats !== want) {
      cls.innerHTML = '<option value="">(model decides)</option>';
      for (const [id, c] of Object.entries(S.data.categories)) {
        const o = document.createElement('option');
        o.value = id; o.textContent = `${c.name} (${id})`;
        cls.appendChild(o);
      }
      cls.dataset.cats = want;
    }
  }
  // the class field shows the selected instance's class, else the class for new instances
  $('.mlc-class-l').textContent = it ? `class of #${it.i}` : 'new instance class';
  cls.options[0].hidden = !!it;
  cls.value = it ? String(it.category_id) : S.newClass;
  const c = cat(it), names = (c && c.keypoints) || [];
  const keep = kp.value;
  kp.innerHTML = '';
  names.forEach((n, j) => {
    const o = document.createElement('option');
    const placed = it.keypoints && it.keypoints[3 * j + 2] > 0;
    o.value = n; o.textContent = n + (placed ? '' : ' (missing)');
    kp.appendChild(o);
  });
  if (names.includes(keep)) kp.value = keep;
  else {
    const missing = names.findIndex((n, j) => !(it.keypoints && it.keypoints[3 * j + 2] > 0));
    if (missing >= 0) kp.value = names[missing];
  }
  showKeypointChoice();
  if (rebuildList) refreshList();
  else {
    $('.mlc-list').querySelectorAll('.mlc-row').forEach((r) => {
      const on = Number(r.dataset.index) === S.selected;
      r.classList.toggle('sel', on);
      if (on) r.scrollIntoView({block: 'nearest'});
    });
    markItems();
  }
}
const LIST_ROWS = 500;  // the instance list's rows at most (an image may hold tens of thousands)
function refreshList() {  // the instance list beside the picture: what is drawn, and the hidden count
  const list = $('.mlc-list');
  list.textContent = '';
  if (!S.data || !S.data.instances) return;
  if (S.pending.length) list.appendChild(refusedSection());
  let hidden = 0, listed = 0, more = 0;
  for (const it of S.data.instances) {
    if (!shown(it)) { hidden++; continue; }
    if (++listed > LIST_ROWS && it.i !== S.selected) { more++; continue; }
    const row = document.createElement('div');
    row.className = 'mlc-row' + (it.i === S.selected ? ' sel' : '') + ' ' + it.state;
    row.dataset.index = String(it.i);
    const sw = document.createElement('span');
    sw.className = 'sw'; sw.style.background = it.color;
    row.appendChild(sw);
    row.appendChild(document.createTextNode(`#${it.i} ${it.name}` + (it.score != null ? ` ${it.score.toFixed(2)}` : '') +
      ` · ${it.state}${it.edited && !(it.source === 'assist' && it.state === 'proposed') ? ' (edited)' : ''}` + (it.source !== 'model' ? ` · ${it.source}` : '')));
    row.addEventListener('click', () => select(it.i));
    list.appendChild(row);
  }
  if (more) list.appendChild(el('div', 'mlc-hidden', `${more} more not listed (the list shows ${LIST_ROWS}): click them on ` +
    'the picture, or raise the min score'));
  if (hidden) { const h = document.createElement('div'); h.className = 'mlc-hidden'; h.textContent = `${hidden} below the min score`; list.appendChild(h); }
  const sel = list.querySelector('.sel');
  if (sel) sel.scrollIntoView({block: 'nearest'});
}
function el(tag, cls, text) {  // an element with its text set as text, never as HTML
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
function when(iso) {  // a stored time in the browser's own time zone: 10:02, or with the date when not today
  const t = new Date(iso), now = new Date();
  if (isNaN(t)) return '';
  const hm = t.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
  return t.toDateString() === now.toDateString() ? hm : `${t.toLocaleDateString()} ${hm}`;
}
const DID = {edited: 'you edited', drawn: 'you drew', assisted: 'you added (assist)', deleted: 'you deleted'};
function version(name, area, state) { return `${name} · ${Math.round(area)} px · ${state}`; }
function button(label, title, op, fields) {
  const b = el('button', 'mlc-pbtn', label);
  b.type = 'button'; b.title = title;
  b.addEventListener('click', (e) => { e.stopPropagation(); send(op, fields); });
  return b;
}
function refusedSection() {  // "Your refused edits": each beside the other person's version, to re-apply or drop
  const box = el('div', 'mlc-pending'), t = S.data.theirs;
  box.appendChild(el('div', 'mlc-phead', `Your refused edits (${S.pending.length})`));
  box.appendChild(el('div', 'mlc-pnote', (t && t.by ? `${t.by} saved this image${t.at ? ' at ' + when(t.at) : ''}` :
    'This image changed in the store') + '. The picture shows the labels as saved now; yours are hatched. ' +
    'Re-apply puts yours back, Drop keeps theirs; then save.'));
  const all = el('div', 'mlc-pbtns');
  all.appendChild(button('Re-apply all', 'put back every refused edit that can be (one undo step)', 'reapply_all'));
  all.appendChild(button('Drop all', 'keep their labels; forget your refused edits (undo brings them back)', 'drop_all'));
  box.appendChild(all);
  for (const p of S.pending) {
    const row = el('div', 'mlc-pitem' + (hotItem(p) ? ' hot' : '')), th = p.theirs;
    row.dataset.item = String(p.item);
    const head = el('div', 'mlc-pline');
    const sw = el('span', 'sw');
    sw.style.background = p.color;
    head.appendChild(sw);
    head.appendChild(document.createTextNode(`${DID[p.kind] || 'you ' + p.state} ${p.name}` + (th ? ` (#${th.i})` : '')));
    row.appendChild(head);
    row.appendChild(el('div', 'mlc-pcmp', 'yours: ' + (p.kind === 'deleted' ? 'deleted' : version(p.name, p.area, p.state))));
    const by = th && th.by ? ` (${th.by}${th.at ? ', ' + when(th.at) : ''})` : '';
    row.appendChild(el('div', 'mlc-pcmp', th ? `theirs${by}: ` + (th.deleted ? 'deleted here' : version(th.name, th.area, th.state)) :
      p.kind === 'drawn' || p.kind === 'assisted' ? 'theirs: (not in their labels: re-apply adds it)' :
        'theirs: gone from their labels (re-apply adds yours as new)'));
    if (p.blocked) row.appendChild(el('div', 'mlc-pblock', p.blocked));
    const btns = el('div', 'mlc-pbtns');
    const again = button('Re-apply', 'put yours in place of theirs', 'reapply', {item: p.item});
    again.disabled = !!p.blocked;
    btns.appendChild(again);
    btns.appendChild(button('Drop', 'keep theirs', 'drop_mine', {item: p.item}));
    row.appendChild(btns);
    const theirsShown = th && !th.deleted && inst(th.i) ? th.i : null;
    row.addEventListener('mouseenter', () => { S.hoverItem = p.item; S.hover = theirsShown; markItems(); local('hover'); });
    row.addEventListener('mouseleave', () => { S.hoverItem = null; S.hover = null; markItems(); local('hover'); });
    row.addEventListener('click', () => {  // picks the pair: theirs selected on the picture, yours highlighted
      S.pickedItem = S.pickedItem === p.item ? null : p.item;
      if (S.pickedItem != null && theirsShown != null) select(theirsShown);
      markItems(); requestDraw();
    });
    box.appendChild(row);
  }
  return box;
}
function markItems() {
  root.querySelectorAll('.mlc-pitem').forEach((r) => {
    const p = S.pending.find((q) => String(q.item) === r.dataset.item);
    r.classList.toggle('hot', !!p && hotItem(p));
  });
}
$('.mlc-class').addEventListener('change', (e) => {
  const v = e.target.value, it = inst(S.selected);
  if (it && v !== '') send('class', {index: it.i, category: Number(v)});
  else S.newClass = v;
});
root.querySelectorAll('[data-tool]').forEach((b) => b.addEventListener('click', () => setTool(b.dataset.tool)));
$('.mlc-fit').addEventListener('click', () => { fit(); local('fit'); });
$('.mlc-one').addEventListener('click', () => { oneToOne(); local('zoom'); });
let scoreTimer = null;
$('.mlc-score').addEventListener('input', (e) => {
  S.minScore = Number(e.target.value);
  $('.mlc-score-v').textContent = S.minScore.toFixed(2);
  refreshList();
  local('score');
  clearTimeout(scoreTimer);  // the server needs it for "accept all shown" and the instance list
  scoreTimer = setTimeout(() => send('view'), 300);
});
$('.mlc-opacity').addEventListener('input', (e) => { S.opacity = Number(e.target.value); local('opacity'); });

// --- pointer ---------------------------------------------------------------------------------------------
function pointerAt(e) {
  const r = canvas.getBoundingClientRect();
  return {x: e.clientX - r.left, y: e.clientY - r.top};
}
function near(sx, sy, x, y) { const [a, b] = toScreen(x, y); return Math.hypot(a - sx, b - sy) <= HANDLE; }
function grab(sx, sy) {  // a handle of the selected instance under the pointer: keypoint, vertex, box handle
  const it = inst(S.selected);
  if (!it || !shown(it)) return null;
  const k = it.keypoints;
  if (k) for (let j = 0; 3 * j < k.length; j++) {
    if (k[3 * j + 2] && near(sx, sy, k[3 * j], k[3 * j + 1])) return {kind: 'kp', index: it.i, j, kps: k.slice()};
  }
  if (it.polygons) for (let part = 0; part < it.polygons.length; part++) {
    const poly = it.polygons[part];
    for (let v = 0; v + 1 < poly.length; v += 2) {
      if (near(sx, sy, poly[v], poly[v + 1])) {
        return {kind: 'vertex', index: it.i, part, vertex: v / 2, polygons: it.polygons.map((p) => p.slice())};
      }
    }
  }
  for (const [name, [x, y]] of Object.entries(boxHandles(boxOf(it)))) {
    if (near(sx, sy, x, y)) return {kind: 'handle', index: it.i, name, box: boxOf(it).slice()};
  }
  return null;
}
function keypointAt(sx, sy) {  // any drawn instance's keypoint under the pointer (the selected one first)
  const list = drawn().sort((a, b) => (b.i === S.selected) - (a.i === S.selected));
  for (const it of list) {
    const k = it.keypoints;
    if (k) for (let j = 0; 3 * j < k.length; j++) if (k[3 * j + 2] && near(sx, sy, k[3 * j], k[3 * j + 1])) return {index: it.i, j};
  }
  return null;
}
canvas.addEventListener('contextmenu', (e) => e.preventDefault());
canvas.addEventListener('pointerdown', (e) => {
  if (!S.data) return;
  root.focus({preventScroll: true});
  const p = pointerAt(e), [x, y] = toImage(p.x, p.y);
  canvas.setPointerCapture(e.pointerId);
  if (e.button === 1 || S.space) { S.drag = {kind: 'pan', sx: p.x, sy: p.y, view: {...S.view}}; return; }
  if (e.button === 2) { const h = keypointAt(p.x, p.y); if (h) cycleVisibility(h); return; }
  if (e.button !== 0) return;
  const g = (S.tool === 'select' || S.tool === 'keypoint' || S.tool === 'box') ? grab(p.x, p.y) : null;
  if (g) { S.drag = Object.assign(g, {sx: p.x, sy: p.y, moved: false}); return; }
  if (S.tool === 'brush' || S.tool === 'eraser') {
    S.drag = {kind: 'stroke', erase: S.tool === 'eraser', index: S.selected, r: Math.min(MAX_BRUSH, S.radius / S.view.s),
      pts: [[x, y]]};
    local('stroke');
  } else if (S.tool === 'box' || S.tool === 'assist') {
    S.drag = {kind: 'rect', x0: x, y0: y, x1: x, y1: y, sx: p.x, sy: p.y};
  } else {
    S.drag = {kind: 'click', sx: p.x, sy: p.y, view: {...S.view}, moved: false};
  }
});
canvas.addEventListener('pointermove', (e) => {
  const p = pointerAt(e);
  S.pointer = p;
  const [x, y] = toImage(p.x, p.y);
  $('.mlc-pos').textContent = S.data ? `x ${x.toFixed(1)}  y ${y.toFixed(1)}` : '';
  const d = S.drag;
  if (!d) {
    const h = keypointAt(p.x, p.y), i = h ? h.index : hitTest(x, y);
    const changed = i !== S.hover || JSON.stringify(h) !== JSON.stringify(S.hoverKp);
    S.hover = i; S.hoverKp = h;
    if (changed) { const it = inst(i); hint(it ? `#${it.i} ${it.name} · ${it.state}${it.score != null ? ' · ' + it.score.toFixed(2) : ''}` : ''); markItems(); local('hover'); }
    else if (S.tool === 'brush' || S.tool === 'eraser' || S.poly.length) requestDraw();
    return;
  }
  const far = Math.hypot(p.x - (d.sx ?? p.x), p.y - (d.sy ?? p.y)) > 3;
  if (d.kind === 'click' && far && S.tool === 'select') d.kind = 'pan';
  if (d.kind === 'pan') {
    S.view = {s: S.view.s, tx: d.view.tx + p.x - d.sx, ty: d.view.ty + p.y - d.sy};
    local('pan');
  } else if (d.kind === 'stroke') {
    d.pts.push([x, y]);
    local('stroke');
  } else if (d.kind === 'rect') {
    d.x1 = x; d.y1 = y; requestDraw();
  } else if (d.kind === 'kp') {
    d.moved = d.moved || far;
    d.kps[3 * d.j] = x; d.kps[3 * d.j + 1] = y; local('drag');
  } else if (d.kind === 'vertex') {
    d.moved = d.moved || far;
    d.polygons[d.part][2 * d.vertex] = x; d.polygons[d.part][2 * d.vertex + 1] = y; local('drag');
  } else if (d.kind === 'handle') {
    d.moved = d.moved || far;
    const b = d.box;
    if (d.name.includes('w')) b[0] = x;
    if (d.name.includes('e')) b[2] = x;
    if (d.name.includes('n')) b[1] = y;
    if (d.name.includes('s')) b[3] = y;
    local('drag');
  }
});
canvas.addEventListener('pointerup', (e) => {
  const d = S.drag;
  S.drag = null;
  if (!d || !S.data) return;
  const p = pointerAt(e), [x, y] = toImage(p.x, p.y);
  if (d.kind === 'stroke') {
    d.seq = send('stroke', {points: d.pts.map(([a, b]) => [round2(a), round2(b)]), radius: round2(d.r),
      erase: d.erase, index: d.index, category: chosenClass()});
    S.strokes.push(d);
    local('stroke');
  } else if (d.kind === 'rect') {
    const box = [d.x0, d.y0, x, y].map(round2), tiny = Math.hypot(p.x - d.sx, p.y - d.sy) < 4;
    if (S.tool === 'assist') {
      if (tiny) send('assist_point', {x: round2(x), y: round2(y), category: chosenClass()});
      else send('assist', {box, category: chosenClass()});
      hint('asking the model…');
    } else if (!tiny) {
      if (S.selected == null) hint('select an instance first; to find a missed object, use assist (x)');
      else send('box', {index: S.selected, box});
    }
  } else if (d.kind === 'kp' && d.moved) {
    const it = inst(d.index), name = cat(it).keypoints[d.j];
    send('keypoint', {index: d.index, name, x: round2(d.kps[3 * d.j]), y: round2(d.kps[3 * d.j + 1]),
      v: it.keypoints[3 * d.j + 2] || 2});
    it.keypoints = d.kps;  // shown where it was dropped until the server answers
  } else if (d.kind === 'vertex' && d.moved) {
    send('vertex', {index: d.index, part: d.part, vertex: d.vertex, x: round2(x), y: round2(y)});
    inst(d.index).polygons = d.polygons;
  } else if (d.kind === 'handle' && d.moved) {
    send('box', {index: d.index, box: d.box.map(round2)});
    const [x0, y0, x1, y1] = d.box;
    inst(d.index).bbox = [Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0)];
  } else if (d.kind === 'click' || ((d.kind === 'kp' || d.kind === 'vertex' || d.kind === 'handle') && !d.moved)) {
    click(x, y, p);
  }
  requestDraw();
});
function round2(v) { return Math.round(v * 100) / 100; }
function click(x, y, p) {
  if (S.tool === 'polygon') {
    if (S.poly.length >= 3 && near(p.x, p.y, S.poly[0][0], S.poly[0][1])) return closePolygon();
    S.poly.push([x, y]); local('vertex');
  } else if (S.tool === 'keypoint') {
    const it = inst(S.selected), name = $('.mlc-kp').value;
    if (!it || !name) { hint('select an instance whose class has keypoints, then choose the keypoint'); return; }
    send('keypoint', {index: it.i, name, x: round2(x), y: round2(y), v: 2});
  } else {
    select(hitTest(x, y));
  }
}
function closePolygon() {
  if (S.poly.length < 3) { hint('a polygon needs at least 3 vertices'); return; }
  send('polygon', {points: S.poly.map(([a, b]) => [round2(a), round2(b)]), mode: $('.mlc-polymode').value,
    index: S.selected, category: chosenClass()});
  S.poly = [];
}
function cycleVisibility(h) {  // visible (2) <-> occluded (1)
  const it = inst(h.index), c = cat(it), k = it.keypoints;
  if (h.index !== S.selected) select(h.index);
  send('keypoint', {index: h.index, name: c.keypoints[h.j], x: k[3 * h.j], y: k[3 * h.j + 1], v: k[3 * h.j + 2] === 2 ? 1 : 2});
}
canvas.addEventListener('wheel', (e) => {
  if (!S.data) return;
  e.preventDefault();
  const p = pointerAt(e);
  zoomAt(p.x, p.y, S.view.s * Math.exp(-e.deltaY * 0.0015));
  local('zoom');
}, {passive: false});
canvas.addEventListener('pointerenter', () => { S.over = true; });
canvas.addEventListener('pointerleave', () => { S.over = false; S.hover = null; S.hoverKp = null; requestDraw(); });

// --- keyboard: while the pointer is over the canvas or it has the focus ----------------------------------
function nextUnreviewed(exclude) {  // as LabelSession.next_unreviewed: the best-scored shown proposal left
  const todo = S.data.instances.filter((it) => shown(it) && it.state === 'proposed' && it.i !== exclude);
  todo.sort((a, b) => (b.score || 0) - (a.score || 0) || a.i - b.i);
  return todo.length ? todo[0].i : null;
}
function review(op) {  // shown at once, so quick repeated keys each review the next instance
  const it = inst(S.selected);
  if (!it) return;
  const seq = send(op, {index: it.i});
  it.state = op === 'accept' ? 'accepted' : 'rejected';  // until the server's answer confirms it
  S.reviewed.push({seq, i: it.i, state: it.state});
  S.selected = nextUnreviewed(it.i);
  refreshToolbar();
  local('review');
}
S.act = (op, fields) => {  // the page's buttons (Save, Accept, Undo, ...) act here, queued behind the edits on their way
  if (!S.data) { $('.mlc-message').textContent = 'Open an image first.'; return; }
  const needs = ['accept', 'reject', 'delete', 'box_from_mask'].includes(op);
  if (needs && S.selected == null) {
    $('.mlc-message').textContent = 'select an instance first (click it, Tab, or pick it in the list)';
  } else if (op === 'accept' || op === 'reject') review(op);
  else send(op, needs ? {index: S.selected} : (fields || {}));
};
function showHistory(events) {  // who did what to this image: saves and reviewers' verdicts, oldest first
  const list = Array.isArray(events) ? events : [];
  const ol = $('.mlc-history ol');
  ol.replaceChildren(...list.map((e) => {
    const li = document.createElement('li');
    li.textContent = `${e.at} · ${e.user}: ${e.what}`;
    return li;
  }));
  const last = list[list.length - 1];
  $('.mlc-history summary').textContent = list.length
    ? `History (${list.length}): last ${last.user}, ${last.at}` : 'History: nobody saved this image here yet';
  const verdict = [...list].reverse().find((e) => e.current);
  const v = $('.mlc-verdict');
  v.textContent = verdict ? `${verdict.what.startsWith('approved') ? 'Approved' : 'Sent back'} by ${verdict.user}` +
    (verdict.what.includes(': ') ? ' — ' + verdict.what.slice(verdict.what.indexOf(': ') + 2) : '') : '';
  v.classList.toggle('mlc-sent-back', !!verdict && !verdict.what.startsWith('approved'));
}
function cycle(step) {
  const list = drawn().map((it) => it.i);
  if (!list.length) return;
  const k = list.indexOf(S.selected);
  select(list[k < 0 ? (step > 0 ? 0 : list.length - 1) : (k + step + list.length) % list.length]);
}
function onKey(e) {
  const t = e.target;
  if (t && (t.tagName === 'INPUT' && t.type !== 'range' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
  if (!S.data || !(S.over || root.contains(document.activeElement))) return;
  const k = e.key, ctrl = e.ctrlKey || e.metaKey;
  const moving = {n: 'btn-next', p: 'btn-prev', ArrowRight: 'btn-next', ArrowLeft: 'btn-prev'}[k];
  if (moving && !ctrl) {  // the page's key handler clicks the button, after the edits still on their way
    if (S.inflight == null && !S.outbox.length) return;
    e.preventDefault(); e.stopImmediatePropagation();
    whenIdle(() => { const b = document.getElementById(moving); const el = b && (b.tagName === 'BUTTON' ? b : b.querySelector('button')); if (el) el.click(); });
    return;
  }
  let done = true;
  if (k === ' ') S.space = true;
  else if (k === 'Tab') cycle(e.shiftKey ? -1 : 1);
  else if (ctrl && (k === 'z' || k === 'Z')) send(e.shiftKey ? 'redo' : 'undo');
  else if (ctrl && (k === 's' || k === 'S')) S.act('save');
  else if (ctrl) done = false;
  else if (k === 'a' && S.selected != null) review('accept');
  else if (k === 'r' && S.selected != null) review('reject');
  else if (k === 'A') send('accept_all');
  else if (k === 'R') send('reject_rest');
  else if (k === 's') S.act('save');
  else if ((k === 'Delete' || k === 'Backspace') && S.selected != null) send('delete', {index: S.selected});
  else if (k === 'z') send('undo');
  else if (k === 'y') send('redo');
  else if (k === '[' || k === ']') {  // on screen, at most the server's limit in image pixels at this zoom
    S.radius = Math.max(1, Math.min(200, MAX_BRUSH * S.view.s, S.radius * (k === ']' ? 1.25 : 0.8)));
    hint(`brush radius ${S.radius.toFixed(0)} px (${(S.radius / S.view.s).toFixed(0)} image px)`); requestDraw();
  }
  else if (k === 'f') { fit(); local('fit'); }
  else if (k === '1') { oneToOne(); local('zoom'); }
  else if (k === 'Enter' && S.poly.length) closePolygon();
  else if (k === 'Escape') { if (S.poly.length || S.drag) { S.poly = []; S.drag = null; } else select(null); requestDraw(); }
  else if (k === 'o') { const h = S.hoverKp; if (h) cycleVisibility(h); }
  else {
    const tool = TOOLS.find((x) => x[1] === k);
    if (tool) setTool(tool[0]); else done = false;
  }
  if (done) { e.preventDefault(); e.stopImmediatePropagation(); }
}
window.addEventListener('keydown', onKey, true);
window.addEventListener('keyup', (e) => { if (e.key === ' ') S.space = false; }, true);

// --- what the server sends -------------------------------------------------------------------------------
function merged(data) {  // an answer holding only the instances that changed (an image with very many), merged
  if (!data || !data.delta) return data;
  if (!S.data || data.image_id !== S.imageId || data.base !== S.rev) {  // an answer in between was not seen
    fetchLabels(S.data ? S.data.token : data.token, null);
    return null;
  }
  const byIndex = new Map(S.byIndex);
  for (const i of data.removed || []) byIndex.delete(i);
  for (const it of data.instances) byIndex.set(it.i, it);
  return Object.assign({}, data, {delta: false, instances: [...byIndex.values()].sort((a, b) => a.i - b.i)});
}
function receive(data) {
  if (data && data.delta) { data = merged(data); if (!data) return; }
  const newImage = !data || data.image_id !== S.imageId;
  if (!newImage && data.rev <= S.rev) return;  // an older answer than the one shown (a button's, overtaken)
  S.answerPending = true;  // the next frame draws a server answer (bench/canvas.py times buttons with it)
  hint('');
  $('.mlc-message').textContent = (data && data.message) || '';
  if (!data || typeof data !== 'object' || data.image_id == null) {
    S.data = null; S.byIndex = new Map(); S.imageId = null; S.levels = []; S.pending = []; $('.mlc-info').textContent = '';
    showPresence([]); showHistory([]); refreshList(); requestDraw(); return;
  }
  $('.mlc-info').textContent = `Image ${data.image_id} · ${data.file_name} · ${data.width}×${data.height} · status ` +
    `${data.status} · ${data.unreviewed} unreviewed` + (data.dirty ? ' · unsaved edits' : '') +
    (data.pending && data.pending.length ? ` · ${data.pending.length} refused edit(s) to decide` : '');
  showHistory(data.history);
  S.rev = data.rev;
  S.data = data;
  S.pending = data.pending || [];
  if (!S.pending.some((p) => p.item === S.pickedItem)) S.pickedItem = null;
  if (!S.pending.some((p) => p.item === S.hoverItem)) S.hoverItem = null;
  S.byIndex = new Map(data.instances.map((it) => [it.i, it]));
  if (newImage) {
    S.imageId = data.image_id; S.masks.clear(); S.poly = []; S.strokes = []; S.drag = null;
    showPresence([]); pollPresence();  // the opener hears at once who else is on this image
    S.selected = data.selected;
    S.minScore = data.min_score || 0;
    $('.mlc-score').value = String(S.minScore); $('.mlc-score-v').textContent = S.minScore.toFixed(2);
    loadImage(data.image_id).catch((err) => hint('the image could not be shown: ' + err));
  }
  for (const [seq, sent] of [...S.sentAt]) {  // server actions: from the input to the redrawn answer
    if (seq <= data.seq) { S.answered.push(Object.assign({seq, got: performance.now()}, sent)); S.sentAt.delete(seq); }
  }
  if (data.seq >= S.seq) S.selected = data.selected;  // no local change is waiting for an answer
  if (S.inflight != null && data.seq >= S.inflight) { S.inflight = null; setTimeout(pump, 0); }
  S.strokes = S.strokes.filter((st) => st.seq > data.seq);
  S.reviewed = newImage ? [] : S.reviewed.filter((r) => r.seq > data.seq);  // reviews still on their way
  for (const r of S.reviewed) { const it = inst(r.i); if (it) it.state = r.state; }
  for (const [key, e] of S.masks) { if (!e.used) S.masks.delete(key); else e.used = false; }
  refreshToolbar();
  if (!S.fitted && S.levels.length) fit();
  requestDraw();
}
function fetchLabels(token, rev) {  // the whole of the labels by a direct call (rev: the announced answer, or null)
  server.canvas_fetch({token, rev}).then(take).catch((err) => hint('could not read the labels: ' + err));
}
function take(data) {  // (timed: bench/photos.py reads how long taking an answer in takes)
  const t = performance.now();
  receive(data);
  S.timings.push({kind: 'receive', ms: performance.now() - t});
}
watch('value', () => {
  const v = props.value;
  // an image with very many instances: the label event sends a note, and its data comes by a direct call
  // (handing megabytes to the page's component state costs seconds)
  if (v && v.fetch) fetchLabels(v.token, v.rev);
  else take(v);
});
new ResizeObserver(() => { if (S.data) requestDraw(); }).observe(canvas);
window.addEventListener('resize', () => requestDraw());
window.addEventListener('beforeunload', (e) => {  // leaving the page with unsaved edits asks first
  if ((S.data && S.data.dirty) || S.outbox.length || S.inflight != null) { e.preventDefault(); e.returnValue = ''; }
});
// --- who else has this image open: polled, shown as a notice above the picture ---------------------------
const BROWSER = (() => {  // this browser's own id (tabs share it): "another tab" or "another browser"
  try {
    let id = localStorage.getItem('maskloop-browser');
    if (!id) { id = Math.random().toString(36).slice(2) + Date.now().toString(36); localStorage.setItem('maskloop-browser', id); }
    return id;
  } catch (err) { return 'tab-' + Math.random().toString(36).slice(2); }
})();
const PRESENCE_MS = 3000;  // the server forgets a page after 30 s without a poll
async function pollPresence() {
  if (S.polling || !S.data || !S.data.token) return;
  S.polling = true;
  const asked = S.imageId;
  try {
    const got = await server.canvas_presence({token: S.data.token, browser: BROWSER});
    if (got && asked === S.imageId && (got.image_id === S.imageId || got.image_id == null)) showPresence(got.others || [], got.news || '');
  } catch (err) {  // the next poll tries again
  } finally { S.polling = false; }
}
function showPresence(others, news) {
  S.presence = others;
  const box = $('.mlc-presence');
  box.textContent = '';
  if (news) {  // the store has newer labels or a newer model's proposals: read them again, keeping the edits
    const line = el('div', 'mlc-news', news + ' ');
    const again = el('button', 'mlc-refresh', 'Refresh (keeps your edits)');
    again.type = 'button';
    again.addEventListener('click', () => { box.textContent = ''; S.act('refresh'); });
    line.appendChild(again);
    box.appendChild(line);
  }
  const then = ': if both of you save, the second save will be refused and kept for review';
  for (const o of others) {
    const since = when(new Date(o.since * 1000).toISOString());
    box.appendChild(el('div', null, o.same_browser ? `You have this image open in another tab too, since ${since}${then}.` :
      o.same_user ? `${o.user} (your user name) has this image open in another browser too, since ${since}${then}.` :
        `${o.user} has this image open too, since ${since}${then}.`));
  }
}
setInterval(pollPresence, PRESENCE_MS);
window.addEventListener('pagehide', () => {  // gone at once rather than after 30 s (best effort)
  if (S.data && S.data.token) server.canvas_presence({token: S.data.token, leaving: true}).catch(() => {});
});
setTool('select');
receive(props.value);
