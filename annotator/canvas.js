// maskloop's labeling canvas: the body of gr.HTML's js_on_load (element, props, trigger, watch, server), with
// KEYMAP, keyId and typingInto in front of it (annotator/keymap.py: the page's one keymap, as data).
// The browser draws the image and the instances (masks from COCO RLE crops, boxes, keypoints), hit-tests,
// zooms and pans by itself; every edit travels to the server as one small message (a direct server-function
// call, server.canvas_edit, applied by annotator/canvas.py apply()); the server's answer (like every label
// event's new props.value) is what is drawn next.
// Each tool is one object in TOOLS (pointer down/move/up, its preview, its own keys, its cursor); the core
// below hands it the pointer and the keys and never asks which tool is on. The state is in named parts:
// S.view (zoom and pan), S.selection, S.gesture (the drag in progress, a shape being drawn), S.queue (the edit
// messages on their way, in order, and what is shown of them until they are answered).
// How a stroke becomes a mask: the brush's object collects the pointer path in image pixels; canvas.py's _stroke
// hands it to LabelSession.paint. How a wand's click becomes a mask: growRegion below, then canvas.py's _region.
// Two browsers on one image: a notice says who else has it open (server.canvas_presence, polled), and after a
// refused save the list shows "Your refused edits" (props.value.pending) next to theirs, hatched on the picture.

const BINDINGS = new Map();  // key id -> its binding (annotator/keymap.py)
for (const b of KEYMAP) for (const k of b.keys) BINDINGS.set(k, b);
const TOOL_KEYS = KEYMAP.filter((b) => b.action.startsWith('tool:'));  // toolbar order
const root = element.querySelector('.mlc-root');
root.innerHTML = `
<div class="mlc-bar">
  <span class="mlc-tools">${TOOL_KEYS.map((b) =>
    `<button type="button" data-tool="${b.action.slice(5)}">${b.action.slice(5)} <kbd>${b.keys[0]}</kbd></button>`).join('')}</span>
  <label title="the selected instance's class (changing it sets it); with nothing selected, the class of a new
    instance (brush, polygon, wand, assist; for assist, blank lets the model decide); keys 1 to 9 pick it"><span
    class="mlc-class-l">class</span> <select class="mlc-class"></select></label>
  <label class="mlc-polywrap">polygon <select class="mlc-polymode">
    <option value="auto">add to selected / new</option><option value="new">new instance</option>
    <option value="add">add to selected</option><option value="subtract">subtract from selected</option></select></label>
  <label class="mlc-wandwrap" title="how far a pixel's colour may be from the clicked one's (0 to 255 in each of
    red, green and blue; [ and ] change it)">tolerance <input type="range" class="mlc-tol" min="0" max="128" step="1"
    value="24"> <span class="mlc-tol-v">24</span> <select class="mlc-wandmode"><option value="add">add to selected / new</option>
    <option value="subtract">subtract from selected</option></select></label>
  <label class="mlc-kpwrap">keypoint <select class="mlc-kp"></select></label>
  <label title="hide proposals scoring below this">min score <input type="range" class="mlc-score" min="0" max="1"
    step="0.05" value="0"> <span class="mlc-score-v">0.00</span></label>
  <label>opacity <input type="range" class="mlc-opacity" min="0" max="1" step="0.05" value="0.5"></label>
  <button type="button" class="mlc-fit" title="fit the image (f)">fit <kbd>f</kbd></button>
  <button type="button" class="mlc-one" title="one image pixel per screen pixel (0)">1:1 <kbd>0</kbd></button>
</div>
<div class="mlc-info"></div>
<div class="mlc-presence" role="status"></div>
<div class="mlc-main"><div class="mlc-stage"><canvas class="mlc-canvas"></canvas></div>
  <div class="mlc-list" title="instances: click one to select it"></div></div>
<div class="mlc-message" role="status"></div>
<div class="mlc-verdict"></div>
<details class="mlc-history"><summary></summary><ol></ol></details>
<div class="mlc-status"><span class="mlc-pos"></span><span class="mlc-zoom"></span><span class="mlc-busy"></span><span class="mlc-hint"></span></div>`;
root.querySelectorAll('[data-tool]').forEach((el) => {
  el.title = TOOL_KEYS.find((b) => b.action === 'tool:' + el.dataset.tool).help;
});

const canvas = root.querySelector('canvas');
const ctx = canvas.getContext('2d');
const $ = (sel) => root.querySelector(sel);
const HANDLE = 7;  // screen pixels within which a handle is grabbed
const S = {
  data: null, byIndex: new Map(), imageId: null, rev: 0, pending: [], presence: [], polling: false,  // as the server sent it
  picture: {levels: [], loading: 0, prefetched: null, fitted: false, layer: null, masks: new Map()},  // pixels, decoded masks
  view: {s: 1, tx: 0, ty: 0},  // zoom and pan: screen = image * s + t
  tool: 'select',
  settings: {newClass: '', radius: 10, minScore: 0, opacity: 0.5, tolerance: 24},
  selection: {index: null, hover: null, hoverKp: null, hoverItem: null, pickedItem: null},
  gesture: {drag: null, poly: [], wand: null, pointer: null, over: false, space: false},
  // the edit messages: sent one at a time, in order; `local` and `strokes` show edits until they are answered
  queue: {seq: 0, outbox: [], inflight: null, sentAt: new Map(), answered: [], local: [], strokes: [], whenIdle: []},
  timings: [], inputAt: null, inputKind: null, frames: 0, afterFrame: [], answerPending: false, answerDrawnAt: 0,
};
root.__maskloop = S;  // tests and bench/canvas.py read timings and state here

// --- small helpers --------------------------------------------------------------------------------------
const toImage = (sx, sy) => [(sx - S.view.tx) / S.view.s, (sy - S.view.ty) / S.view.s];
const toScreen = (x, y) => [x * S.view.s + S.view.tx, y * S.view.s + S.view.ty];
const inst = (i) => (i == null ? null : S.byIndex.get(i) || null);
const cat = (it) => (it && S.data ? S.data.categories[String(it.category_id)] : null);
function shown(it) {  // as LabelSession.visible: low-score model proposals hide, accepted ones always show
  return !(it.source === 'model' && it.state !== 'accepted' && it.score != null && it.score < S.settings.minScore);
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
  let e = S.picture.masks.get(key);
  if (!e) { e = {inside: decodeMask(it.mask), painted: {}}; S.picture.masks.set(key, e); }
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
  if (id == null || id === S.imageId || (S.picture.prefetched && S.picture.prefetched.id === id)) return;
  const mine = {id};
  mine.levels = decodePicture(id).then(async (full) => {
    if (!full) return null;
    const rest = await halves(full, () => S.picture.prefetched === mine);
    return rest ? [{s: 1, bmp: full}].concat(rest) : null;
  }).catch(() => null);
  S.picture.prefetched = mine;
}
async function loadImage(imageId) {
  const token = ++S.picture.loading;
  S.picture.levels = [];
  S.picture.fitted = false;
  if (S.picture.prefetched && S.picture.prefetched.id === imageId) {  // decoded while the last image was labeled
    const levels = await S.picture.prefetched.levels;
    S.picture.prefetched = null;
    if (token !== S.picture.loading) return;
    if (levels) {
      S.picture.levels = levels;
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
    if (token === S.picture.loading) $('.mlc-message').textContent = String(err.message || err);
    return;
  }
  if (token !== S.picture.loading || !full) return;
  S.picture.levels = [{s: 1, bmp: full}];
  fit();
  const rest = await halves(full, () => token === S.picture.loading);
  if (!rest) return;
  S.picture.levels = S.picture.levels.concat(rest);
  requestDraw();
  if (S.data) prefetch(S.data.next);
}
function imageLevel() {  // the smallest copy with at least one pixel per screen pixel
  let best = S.picture.levels[0];
  for (const lv of S.picture.levels) if (lv.s >= S.view.s * (window.devicePixelRatio || 1)) best = lv;
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
  S.picture.fitted = true;
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
  const p = S.gesture.pointer || {x: W / 2, y: H / 2};
  zoomAt(p.x, p.y, 1 / (window.devicePixelRatio || 1));
}


// --- drawing ---------------------------------------------------------------------------------------------
let drawPending = false;
function requestDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}
const dragOf = (on, i) => { const d = S.gesture.drag; return d && d.on === on && d.index === i ? d : null; };
function boxOf(it) {  // xyxy, live while its handles are dragged
  const d = dragOf(DRAGS.handle, it.i);
  if (d) return d.box;
  const [x, y, w, h] = it.bbox;
  return [x, y, x + w, y + h];
}
function keypointsOf(it) { const d = dragOf(DRAGS.kp, it.i); return d ? d.kps : it.keypoints; }
function polygonsOf(it) { const d = dragOf(DRAGS.vertex, it.i); return d ? d.polygons : it.polygons; }
function draw() {
  const [W, H] = size(), dpr = window.devicePixelRatio || 1, {s, tx, ty} = S.view, sel = S.selection.index;
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
  const list = drawn(), many = list.length > MANY, hover = S.selection.hover;
  if (many) {  // one cached layer of every mask, then the selected and hovered ones on top
    ctx.drawImage(layerOf(list).canvas, 0, 0, S.data.width, S.data.height);
  }
  for (const it of many ? [inst(hover), inst(sel)].filter((x) => x && shown(x)) : list) {
    const e = maskOf(it);
    if (!e) continue;
    const emph = it.i === sel ? 1.8 : it.i === hover ? 1.4 : 1;
    ctx.globalAlpha = Math.min(1, S.settings.opacity * 2 * emph * (it.i === sel ? 1 : 0.85));
    ctx.drawImage(e.painted[it.state === 'proposed' ? 'p' : 'a'], it.mask.x, it.mask.y);
  }
  for (const p of S.pending) {  // this person's refused edits, hatched over the labels saved meanwhile
    const e = p.kind !== 'deleted' && maskOf(p);
    if (!e) continue;
    ctx.globalAlpha = hotItem(p) ? 1 : 0.75;
    ctx.drawImage(e.painted.h, p.mask.x, p.mask.y);
  }
  ctx.globalAlpha = 0.55;
  const d = S.gesture.drag;
  for (const st of S.queue.strokes.concat(d && d.pts ? [d] : [])) {  // strokes not yet applied
    ctx.strokeStyle = st.erase ? '#000000' : (inst(st.index) || {color: '#ffffff'}).color;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = 2 * st.r; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
    ctx.beginPath();
    st.pts.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (st.pts.length === 1) { ctx.arc(st.pts[0][0], st.pts[0][1], st.r, 0, 2 * Math.PI); ctx.fill(); } else ctx.stroke();
  }
  ctx.globalAlpha = 1;
  const tool = TOOLS[S.tool];
  if (tool.underlay) tool.underlay();  // drawn in image pixels (the wand's region)
  // everything below is drawn in screen pixels, so lines and labels stay readable at any zoom
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.font = '12px sans-serif';
  let tags = 0;
  for (const it of list) {
    const [x0, y0, x1, y1] = boxOf(it), [a, b] = toScreen(x0, y0), [c, e] = toScreen(x1, y1);
    const on = it.i === sel;
    if (many && !on && it.i !== hover && (c < 0 || e < 0 || a > W || b > H || (c - a < 3 && e - b < 3))) continue;
    ctx.setLineDash(it.state === 'proposed' ? [6, 4] : []);
    ctx.lineWidth = on ? 3 : it.i === hover ? 2 : 1.5;
    ctx.strokeStyle = it.color;
    ctx.strokeRect(a, b, c - a, e - b);
    if (on) { ctx.setLineDash([]); ctx.lineWidth = 1; ctx.strokeStyle = '#ffffff'; ctx.strokeRect(a - 2, b - 2, c - a + 4, e - b + 4); }
    ctx.setLineDash([]);
    drawKeypoints(it, on);
    if (many && !on && it.i !== hover && (c - a < TAG_MIN || ++tags > MAX_TAGS)) continue;  // unreadable crowds
    const label = `#${it.i} ${it.name}` + (it.score != null && it.state === 'proposed' ? ` ${it.score.toFixed(2)}` : '') +
      (it.state === 'accepted' ? ' ✓' : '');
    const tw = ctx.measureText(label).width;
    ctx.fillStyle = 'rgba(0,0,0,0.6)';
    ctx.fillRect(a, Math.max(0, b - 15), tw + 6, 15);
    ctx.fillStyle = it.color;
    ctx.fillText(label, a + 3, Math.max(11, b - 4));
  }
  drawRefused();
  const picked = inst(sel);
  if (picked && shown(picked)) drawHandles(picked);
  if (tool.preview) tool.preview();  // the tool's own gesture: a rectangle, a polygon being drawn, the brush
  finishDraw();
}
const MAX_BRUSH = 1024;  // image pixels: the server's limit on a brush's radius (annotator.labeling)
const MANY = 400;  // more instances drawn than this: masks from one cached layer, boxes culled, fewer tags
const TAG_MIN = 40, MAX_TAGS = 200;  // with many instances: a tag only on a box this wide, at most this many
const LAYER_PIXELS = 16e6;  // the layer's size at most (a larger image's layer is scaled down)
function layerOf(list) {  // every drawn mask in one bitmap, rebuilt only when the labels or the view's filters change
  const shownStates = S.queue.local.filter((r) => r.field === 'state').map((r) => r.i + r.value).join();
  const key = `${S.data.image_id}|${S.rev}|${S.settings.opacity}|${S.settings.minScore}|${shownStates}`;
  const P = S.picture;
  if (P.layer && P.layer.key === key) return P.layer;
  const W = S.data.width, H = S.data.height, f = Math.min(1, Math.sqrt(LAYER_PIXELS / (W * H)));
  const lw = Math.max(1, Math.round(W * f)), lh = Math.max(1, Math.round(H * f));
  const im = new ImageData(lw, lh), d = im.data;
  for (const it of list) {
    const e = insideOf(it);
    if (!e) continue;
    const m = it.mask, [r, g, b] = rgb(it.color);
    const a = Math.round(Math.min(1, S.settings.opacity * 2 * 0.85) * (it.state === 'proposed' ? 70 : 140));
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
  P.layer = {key, canvas: canvas2};
  return P.layer;
}
function hotItem(p) {  // a refused edit pointed at in the list, or whose instance is pointed at on the picture
  const j = p.theirs ? p.theirs.i : null, L = S.selection;
  return p.item === L.hoverItem || p.item === L.pickedItem || (j != null && (j === L.hover || j === L.index));
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
    if (S.selection.hoverKp && S.selection.hoverKp.index === it.i && S.selection.hoverKp.j === j) {
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
function drawRect(d, colour) {  // a rectangle being dragged (box, assist, keypoint skeleton)
  const [a, b] = toScreen(d.x0, d.y0), [c, e] = toScreen(d.x1, d.y1);
  ctx.setLineDash([5, 3]); ctx.strokeStyle = colour; ctx.lineWidth = 2;
  ctx.strokeRect(a, b, c - a, e - b); ctx.setLineDash([]);
}
function finishDraw() {
  S.frames++;
  if (S.inputAt != null) {  // a local action: from the input event to this drawn frame
    S.timings.push({kind: S.inputKind, ms: performance.now() - S.inputAt});
    S.inputAt = null;
  }
  if (S.answerPending) { S.answerPending = false; S.answerDrawnAt = performance.now(); }
  if (S.afterFrame.length) { const later = S.afterFrame; S.afterFrame = []; setTimeout(() => later.forEach((fn) => fn()), 0); }
  for (const a of S.queue.answered) S.timings.push({kind: 'server:' + a.op, ms: performance.now() - a.t, seq: a.seq, wire: a.got - a.t});
  S.queue.answered = [];
  $('.mlc-zoom').textContent = S.data ? `zoom ${(S.view.s * 100).toFixed(S.view.s < 0.1 ? 1 : 0)}%` : '';
  $('.mlc-busy').textContent = S.queue.sentAt.size ? 'saving…' : '';
}
function local(kind) { S.inputAt = performance.now(); S.inputKind = kind; requestDraw(); }

// --- messages to the server ------------------------------------------------------------------------------
function send(op, fields) {  // one message at a time, in order: the next leaves when the last is answered
  const Q = S.queue, seq = ++Q.seq;
  Q.sentAt.set(seq, {t: performance.now(), op});
  Q.outbox.push(Object.assign({op, seq, min_score: S.settings.minScore}, fields || {}));
  pump();
  requestDraw();
  return seq;
}
function showUntilAnswered(seq, i, key, value) {  // an edit's effect shown at once, until its answer replaces it
  const it = inst(i);
  S.queue.local.push({seq, i, field: key, value, obj: it, was: it ? it[key] : undefined});
  if (it) it[key] = value;
}
function pump() {
  const Q = S.queue;
  if (Q.inflight) return;
  const msg = Q.outbox.shift();
  if (!msg) { const idle = Q.whenIdle; Q.whenIdle = []; idle.forEach((fn) => fn()); return; }
  Q.inflight = msg.seq;
  setTimeout(() => {  // no answer (the server failed: Gradio shows its error): do not block the next edits
    if (Q.inflight === msg.seq) { Q.inflight = null; Q.sentAt.delete(msg.seq); hint('the server did not answer that edit'); pump(); }
  }, 20000);
  const failed = (why) => {  // the picture and the labels stay as they are; the person is told
    if (Q.inflight === msg.seq) { Q.inflight = null; Q.sentAt.delete(msg.seq); pump(); }
    hint(why);
  };
  server.canvas_edit(Object.assign({token: S.data ? S.data.token : ''}, msg)).then((data) => {
    if (data && typeof data === 'object') receive(data);
    else failed('that edit got no answer (logged out in another tab, or the server failed): reload the page');
  }).catch((err) => failed('that edit failed on the server: ' + err));
}
const queueIdle = () => !S.queue.inflight && !S.queue.outbox.length;
function whenIdle(fn) {  // after every queued edit is answered (saving, moving on)
  if (queueIdle()) fn(); else S.queue.whenIdle.push(fn);
}
function clickButton(id) {  // one of the page's buttons (Gradio wraps some in a container with that id)
  const b = document.getElementById(id), el = b && (b.tagName === 'BUTTON' ? b : b.querySelector('button'));
  if (el) el.click();
}
function hint(text) { $('.mlc-hint').textContent = text; }
function chosenClass() { return S.settings.newClass === '' ? null : Number(S.settings.newClass); }
function select(i, tell = true) {
  S.selection.index = i;
  refreshToolbar(false);
  local('select');
  if (tell) S.afterFrame.push(() => send('select', {index: i}));  // the server hears of it after the frame
}
function round2(v) { return Math.round(v * 100) / 100; }

// --- toolbar ---------------------------------------------------------------------------------------------
function setTool(t) {
  const before = TOOLS[S.tool];
  if (before && before.leave) before.leave();
  S.tool = t;
  const tool = TOOLS[t];
  root.querySelectorAll('[data-tool]').forEach((b) => b.classList.toggle('on', b.dataset.tool === t));
  for (const other of Object.values(TOOLS)) if (other.bar) $(other.bar).style.display = other === tool ? '' : 'none';
  showKeypointChoice();
  hint(TOOL_KEYS.find((b) => b.action === 'tool:' + t).help);
  canvas.style.cursor = tool.cursor;
  requestDraw();
}
function showKeypointChoice() {  // only for a selected instance whose class has keypoints
  const c = cat(inst(S.selection.index)), any = !!(c && c.keypoints && c.keypoints.length);
  $('.mlc-kpwrap').style.display = any && TOOLS[S.tool].keypoints ? '' : 'none';
}
function refreshToolbar(rebuildList = true) {
  const cls = $('.mlc-class'), kp = $('.mlc-kp'), it = inst(S.selection.index);
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
  cls.value = it ? String(it.category_id) : S.settings.newClass;
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
      const on = Number(r.dataset.index) === S.selection.index;
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
    if (++listed > LIST_ROWS && it.i !== S.selection.index) { more++; continue; }
    const row = document.createElement('div');
    row.className = 'mlc-row' + (it.i === S.selection.index ? ' sel' : '') + ' ' + it.state;
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
    row.addEventListener('mouseenter', () => { S.selection.hoverItem = p.item; S.selection.hover = theirsShown; markItems(); local('hover'); });
    row.addEventListener('mouseleave', () => { S.selection.hoverItem = null; S.selection.hover = null; markItems(); local('hover'); });
    row.addEventListener('click', () => {  // picks the pair: theirs selected on the picture, yours highlighted
      S.selection.pickedItem = S.selection.pickedItem === p.item ? null : p.item;
      if (S.selection.pickedItem != null && theirsShown != null) select(theirsShown);
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
function pickClass(v) {  // the class menu's choice: the selected instance's class, else the class of new ones
  const it = inst(S.selection.index);
  if (it && v !== '') { if (Number(v) !== it.category_id) send('class', {index: it.i, category: Number(v)}); }
  else S.settings.newClass = v;
  $('.mlc-class').value = it && v !== '' ? v : S.settings.newClass;
}
function backToPicture(e) { e.target.blur(); root.focus({preventScroll: true}); }  // the keys label again
$('.mlc-class').addEventListener('change', (e) => { pickClass(e.target.value); backToPicture(e); });
root.querySelectorAll('[data-tool]').forEach((b) => b.addEventListener('click', () => setTool(b.dataset.tool)));
$('.mlc-fit').addEventListener('click', () => { fit(); local('fit'); });
$('.mlc-one').addEventListener('click', () => { oneToOne(); local('zoom'); });
let scoreTimer = null;
$('.mlc-score').addEventListener('input', (e) => {
  S.settings.minScore = Number(e.target.value);
  $('.mlc-score-v').textContent = S.settings.minScore.toFixed(2);
  refreshList();
  local('score');
  clearTimeout(scoreTimer);  // the server needs it for "accept all shown" and the instance list
  scoreTimer = setTimeout(() => send('view'), 300);
});
$('.mlc-opacity').addEventListener('input', (e) => { S.settings.opacity = Number(e.target.value); local('opacity'); });
$('.mlc-tol').addEventListener('input', (e) => setTolerance(Number(e.target.value)));
for (const sel of ['.mlc-score', '.mlc-opacity', '.mlc-tol', '.mlc-polymode', '.mlc-wandmode', '.mlc-kp']) {
  $(sel).addEventListener('change', backToPicture);  // a slider or menu let go of: the keys label again
}

// --- pointer: the core hands each gesture to the current tool's object ------------------------------------
// A drag is {on, sx, sy, moved, ...}: `on` is the object whose move(d, ev) and up(d, ev) it calls (a tool, or
// one of DRAGS: the handles of the selected instance, which select, box and keypoint share, and a pan). An
// event `ev` is {e, p: {x, y} in screen pixels, x, y in image pixels}.
function pointerAt(e) {
  const r = canvas.getBoundingClientRect();
  return {x: e.clientX - r.left, y: e.clientY - r.top};
}
function eventAt(e) { const p = pointerAt(e), [x, y] = toImage(p.x, p.y); return {e, p, x, y}; }
function near(sx, sy, x, y) { const [a, b] = toScreen(x, y); return Math.hypot(a - sx, b - sy) <= HANDLE; }
function startDrag(on, ev, fields) { S.gesture.drag = Object.assign({on, sx: ev.p.x, sy: ev.p.y, moved: false}, fields || {}); }
function grab(sx, sy) {  // a handle of the selected instance under the pointer: keypoint, vertex, box handle
  const it = inst(S.selection.index);
  if (!it || !shown(it)) return null;
  const k = it.keypoints;
  if (k) for (let j = 0; 3 * j < k.length; j++) {
    if (k[3 * j + 2] && near(sx, sy, k[3 * j], k[3 * j + 1])) return {on: DRAGS.kp, index: it.i, j, kps: k.slice()};
  }
  if (it.polygons) for (let part = 0; part < it.polygons.length; part++) {
    const poly = it.polygons[part];
    for (let v = 0; v + 1 < poly.length; v += 2) {
      if (near(sx, sy, poly[v], poly[v + 1])) {
        return {on: DRAGS.vertex, index: it.i, part, vertex: v / 2, polygons: it.polygons.map((p) => p.slice())};
      }
    }
  }
  for (const [name, [x, y]] of Object.entries(boxHandles(boxOf(it)))) {
    if (near(sx, sy, x, y)) return {on: DRAGS.handle, index: it.i, name, box: boxOf(it).slice()};
  }
  return null;
}
function keypointAt(sx, sy) {  // any drawn instance's keypoint under the pointer (the selected one first)
  const sel = S.selection.index, list = drawn().sort((a, b) => (b.i === sel) - (a.i === sel));
  for (const it of list) {
    const k = it.keypoints;
    if (k) for (let j = 0; 3 * j < k.length; j++) if (k[3 * j + 2] && near(sx, sy, k[3 * j], k[3 * j + 1])) return {index: it.i, j};
  }
  return null;
}
function tapped(ev) { const t = TOOLS[S.tool]; (t.tap ? t : Select).tap(ev); }  // a handle pressed and let go, not moved
const DRAGS = {
  pan: {
    move(d, ev) { S.view = {s: S.view.s, tx: d.view.tx + ev.p.x - d.sx, ty: d.view.ty + ev.p.y - d.sy}; local('pan'); },
    up() {},
  },
  kp: {
    move(d, ev) { d.kps[3 * d.j] = ev.x; d.kps[3 * d.j + 1] = ev.y; local('drag'); },
    up(d, ev) {
      if (!d.moved) return tapped(ev);
      const it = inst(d.index), name = cat(it).keypoints[d.j];
      const seq = send('keypoint', {index: d.index, name, x: round2(d.kps[3 * d.j]), y: round2(d.kps[3 * d.j + 1]),
        v: it.keypoints[3 * d.j + 2] || 2});
      showUntilAnswered(seq, d.index, 'keypoints', d.kps);  // shown where it was dropped until the server answers
    },
  },
  vertex: {
    move(d, ev) { d.polygons[d.part][2 * d.vertex] = ev.x; d.polygons[d.part][2 * d.vertex + 1] = ev.y; local('drag'); },
    up(d, ev) {
      if (!d.moved) return tapped(ev);
      const seq = send('vertex', {index: d.index, part: d.part, vertex: d.vertex, x: round2(ev.x), y: round2(ev.y)});
      showUntilAnswered(seq, d.index, 'polygons', d.polygons);
    },
  },
  handle: {  // a box handle: inward cuts the mask; outward asks the model (canvas.py's _box_edit)
    move(d, ev) {
      const b = d.box;
      if (d.name.includes('w')) b[0] = ev.x;
      if (d.name.includes('e')) b[2] = ev.x;
      if (d.name.includes('n')) b[1] = ev.y;
      if (d.name.includes('s')) b[3] = ev.y;
      local('drag');
    },
    up(d, ev) {
      if (!d.moved) return tapped(ev);
      const seq = send('box', {index: d.index, box: d.box.map(round2)});
      const [x0, y0, x1, y1] = d.box;  // shown until answered: a refusal puts the box back
      showUntilAnswered(seq, d.index, 'bbox', [Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0)]);
    },
  },
};

// --- tools: one object each (down/move/up, preview, keys, cursor); their keys are looked up in KEYMAP -----
const Select = {
  cursor: 'default', grabs: true, keypoints: true,
  down(ev, returning) { startDrag(this, ev, {view: {...S.view}, returning}); },
  move(d, ev) { if (d.moved) { d.on = DRAGS.pan; DRAGS.pan.move(d, ev); } },  // dragging empty space pans
  up(d, ev) {
    if (d.returning) hint('the keys work on the picture again (that click only took the focus back)');
    else this.tap(ev);
  },
  tap(ev) { select(hitTest(ev.x, ev.y)); },
};
function paintTool(erase) {  // the brush and the eraser: a stroke is the pointer's path and a radius
  return {
    cursor: 'crosshair', hovers: true,
    down(ev) {
      startDrag(this, ev, {erase, index: S.selection.index, r: Math.min(MAX_BRUSH, S.settings.radius / S.view.s), pts: [[ev.x, ev.y]]});
      local('stroke');
    },
    move(d, ev) { d.pts.push([ev.x, ev.y]); local('stroke'); },
    up(d) {
      d.seq = send('stroke', {points: d.pts.map(([a, b]) => [round2(a), round2(b)]), radius: round2(d.r),
        erase: d.erase, index: d.index, category: chosenClass()});
      S.queue.strokes.push(d);
      local('stroke');
    },
    preview() {
      const p = S.gesture.pointer;
      if (!p || !S.gesture.over) return;
      ctx.strokeStyle = erase ? '#ff5555' : '#ffffff'; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(p.x, p.y, S.settings.radius, 0, 2 * Math.PI); ctx.stroke();
    },
  };
}
const Polygon = {
  cursor: 'crosshair', bar: '.mlc-polywrap',
  get hovers() { return S.gesture.poly.length > 0; },  // the edge to the pointer follows it
  down(ev) { startDrag(this, ev); },
  move() {},
  up(d, ev) {
    const poly = S.gesture.poly;
    if (poly.length >= 3 && near(ev.p.x, ev.p.y, poly[0][0], poly[0][1])) return this.keys.commit();
    poly.push([ev.x, ev.y]); local('vertex');
  },
  leave() { S.gesture.poly = []; },
  preview() {  // the polygon being drawn, its vertices as handles
    const poly = S.gesture.poly, p = S.gesture.pointer;
    if (!poly.length) return;
    ctx.strokeStyle = '#ffff00'; ctx.fillStyle = '#ffff00'; ctx.lineWidth = 1.5;
    ctx.beginPath();
    poly.forEach(([x, y], k) => { const [a, b] = toScreen(x, y); if (k) ctx.lineTo(a, b); else ctx.moveTo(a, b); });
    if (p) ctx.lineTo(p.x, p.y);
    ctx.stroke();
    poly.forEach(([x, y], k) => {
      const [a, b] = toScreen(x, y);
      ctx.beginPath(); ctx.arc(a, b, k === 0 ? 6 : 4, 0, 2 * Math.PI); ctx.fill();
    });
  },
  keys: {
    commit() {
      const poly = S.gesture.poly;
      if (!poly.length) return false;
      if (poly.length < 3) { hint('a polygon needs at least 3 vertices'); return; }
      send('polygon', {points: poly.map(([a, b]) => [round2(a), round2(b)]), mode: $('.mlc-polymode').value,
        index: S.selection.index, category: chosenClass()});
      S.gesture.poly = [];
    },
    cancel() { if (!S.gesture.poly.length) return false; S.gesture.poly = []; requestDraw(); },
  },
};
function rectTool(colour, fields) {  // a tool that drags a rectangle (box, assist, keypoint's skeleton)
  return Object.assign({
    cursor: 'crosshair',
    down(ev) { startDrag(this, ev, {x0: ev.x, y0: ev.y, x1: ev.x, y1: ev.y}); },
    move(d, ev) { d.x1 = ev.x; d.y1 = ev.y; requestDraw(); },
    up(d, ev) { if (d.moved) this.dragged([d.x0, d.y0, ev.x, ev.y].map(round2), ev); else this.tap(ev); },
    preview() { const d = S.gesture.drag; if (d && d.on === this && d.moved) drawRect(d, colour); },
  }, fields);
}
const Box = rectTool('#ffff00', {
  grabs: true,
  dragged(box) {
    if (S.selection.index == null) hint('select an instance first; to find a missed object, use assist (x)');
    else send('box', {index: S.selection.index, box});
  },
  tap(ev) { Select.tap(ev); },
});
const Assist = rectTool('#00ffff', {
  dragged(box) { send('assist', {box, category: chosenClass()}); hint('asking the model…'); },
  tap(ev) { send('assist_point', {x: round2(ev.x), y: round2(ev.y), category: chosenClass()}); hint('asking the model…'); },
});
const Keypoint = rectTool('#22c55e', {
  grabs: true, keypoints: true,
  tap(ev) {  // the chosen keypoint placed here; the choice steps on to the next one still missing
    const it = inst(S.selection.index), c = cat(it), kp = $('.mlc-kp'), name = kp.value;
    if (!it || !name) { hint('select an instance whose class has keypoints, then choose the keypoint'); return; }
    send('keypoint', {index: it.i, name, x: round2(ev.x), y: round2(ev.y), v: 2});
    const names = c.keypoints, j = names.indexOf(name), k = it.keypoints || [];
    for (let step = 1; step < names.length; step++) {
      const t = (j + step) % names.length;
      if (!(k[3 * t + 2] > 0)) { kp.value = names[t]; break; }
    }
  },
  dragged(box) {  // the whole skeleton laid out in the box (canvas.py's _skeleton), then its points are dragged
    const it = inst(S.selection.index), c = cat(it);
    if (!it || !(c && c.keypoints && c.keypoints.length)) { hint('select an instance whose class has keypoints first'); return; }
    send('skeleton', {index: it.i, box});
  },
});

// the magic wand: a region of similar colour grown from the clicked pixel, in the browser, on the picture's own
// pixels; shown, then sent as one `region` message (a COCO RLE of its crop) that adds to the selected mask
const WAND_SIDE = 2048;  // image pixels: the region grows within the part on screen, at most this a side
const MAX_REGION_COUNTS = 200000;  // characters of the region's RLE at most (canvas.py's limit)
function wandWindow(x, y) {  // [x0, y0, x1, y1]: on screen, in the image, at most WAND_SIDE a side around (x, y)
  const [W, H] = size(), [ax, ay] = toImage(0, 0), [bx, by] = toImage(W, H), half = WAND_SIDE / 2;
  const x0 = Math.max(0, Math.floor(ax), Math.floor(x) - half), y0 = Math.max(0, Math.floor(ay), Math.floor(y) - half);
  const x1 = Math.min(S.data.width, Math.ceil(bx), Math.floor(x) + half), y1 = Math.min(S.data.height, Math.ceil(by), Math.floor(y) + half);
  return [x0, y0, x1, y1];
}
function wandPixels(win) {  // the picture's RGBA pixels in the window (read once per window and image)
  const key = `${S.imageId}|${win}`, P = S.picture;
  if (P.wandPixels && P.wandPixels.key === key) return P.wandPixels.px;
  const full = P.levels[0], [x0, y0, x1, y1] = win, w = x1 - x0, h = y1 - y0;
  const c = document.createElement('canvas');
  c.width = w; c.height = h;
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(full.bmp, x0, y0, w, h, 0, 0, w, h);
  P.wandPixels = {key, px: g.getImageData(0, 0, w, h).data};
  return P.wandPixels.px;
}
function growRegion(seed, win, tol) {  // 4-connected flood fill: each channel within tol of the seed pixel's
  const [x0, y0, x1, y1] = win, w = x1 - x0, h = y1 - y0, px = wandPixels(win);
  const inside = new Uint8Array(w * h), stack = new Int32Array(w * h);
  const s = (Math.floor(seed[1]) - y0) * w + (Math.floor(seed[0]) - x0);
  const r0 = px[4 * s], g0 = px[4 * s + 1], b0 = px[4 * s + 2];
  const like = (k) => !inside[k] && Math.abs(px[4 * k] - r0) <= tol && Math.abs(px[4 * k + 1] - g0) <= tol &&
    Math.abs(px[4 * k + 2] - b0) <= tol;
  let top = 0, area = 0, bx0 = w, by0 = h, bx1 = -1, by1 = -1;
  inside[s] = 1; stack[top++] = s;
  while (top) {
    const k = stack[--top], x = k % w, y = (k - x) / w;
    area++;
    if (x < bx0) bx0 = x; if (x > bx1) bx1 = x; if (y < by0) by0 = y; if (y > by1) by1 = y;
    if (x > 0 && like(k - 1)) { inside[k - 1] = 1; stack[top++] = k - 1; }
    if (x < w - 1 && like(k + 1)) { inside[k + 1] = 1; stack[top++] = k + 1; }
    if (y > 0 && like(k - w)) { inside[k - w] = 1; stack[top++] = k - w; }
    if (y < h - 1 && like(k + w)) { inside[k + w] = 1; stack[top++] = k + w; }
  }
  const cut = (bx0 === 0 && x0 > 0) || (by0 === 0 && y0 > 0) || (bx1 === w - 1 && x1 < S.data.width) ||
    (by1 === h - 1 && y1 < S.data.height);  // it reached the window's edge inside the image
  return {seed, win, tol, inside, w, area, cut, box: [bx0, by0, bx1 + 1, by1 + 1]};
}
function regionRLE(R) {  // the region's tight crop as COCO compressed RLE (column-major; pycocotools' rleToString)
  const [bx0, by0, bx1, by1] = R.box, cnts = [];
  let prev = 0, run = 0;
  for (let x = bx0; x < bx1; x++) {
    for (let y = by0; y < by1; y++) {
      const v = R.inside[y * R.w + x];
      if (v !== prev) { cnts.push(run); run = 0; prev = v; }
      run++;
    }
  }
  cnts.push(run);
  const out = [];
  for (let i = 0; i < cnts.length; i++) {
    let x = cnts[i] - (i > 2 ? cnts[i - 2] : 0), more = 1;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = (c & 0x10) ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out.push(c + 48);
    }
  }
  let s = '';
  for (let k = 0; k < out.length; k += 8192) s += String.fromCharCode.apply(null, out.slice(k, k + 8192));
  return s;
}
function regionImage(R) {  // the region as a tinted bitmap of its crop, with its outline, for the preview
  const [bx0, by0, bx1, by1] = R.box, w = bx1 - bx0, h = by1 - by0, c = document.createElement('canvas');
  c.width = w; c.height = h;
  const im = new ImageData(w, h), d = im.data, at = (x, y) => R.inside[(by0 + y) * R.w + bx0 + x];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (!at(x, y)) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !at(x - 1, y) || !at(x + 1, y) || !at(x, y - 1) || !at(x, y + 1);
      const o = 4 * (y * w + x);
      d[o] = 255; d[o + 1] = edge ? 255 : 0; d[o + 2] = 255; d[o + 3] = edge ? 255 : 110;
    }
  }
  c.getContext('2d').putImageData(im, 0, 0);
  return c;
}
function setTolerance(t) {
  S.settings.tolerance = Math.max(0, Math.min(128, Math.round(t)));
  $('.mlc-tol').value = String(S.settings.tolerance); $('.mlc-tol-v').textContent = String(S.settings.tolerance);
  if (!S.gesture.wand || regrowing) return;
  regrowing = true;  // the shown region follows the tolerance, grown again at most once a frame (a 4 MP
  requestAnimationFrame(() => {  // region takes a few hundred ms: a slider dragged over it must not queue them)
    regrowing = false;
    const R = S.gesture.wand;
    if (R) Wand.grow(R.seed, R.win, R.alt);
  });
}
let regrowing = false;
const Wand = {
  cursor: 'crosshair', bar: '.mlc-wandwrap',
  down(ev) { startDrag(this, ev, {alt: ev.e.altKey}); },
  move() {},
  up(d, ev) {
    const R = S.gesture.wand, [bx0, by0, bx1, by1] = R ? R.box : [];
    const x = R && Math.floor(ev.x) - R.win[0], y = R && Math.floor(ev.y) - R.win[1];
    if (R && x >= bx0 && x < bx1 && y >= by0 && y < by1 && R.inside[y * R.w + x]) return this.apply(d.alt || R.alt);
    if (ev.x < 0 || ev.y < 0 || ev.x >= S.data.width || ev.y >= S.data.height) return;
    if (!S.picture.levels.length || S.picture.levels[0].s !== 1) { hint('the picture is still loading'); return; }
    this.grow([ev.x, ev.y], wandWindow(ev.x, ev.y), d.alt);
  },
  grow(seed, win, alt) {
    const t = performance.now(), R = growRegion(seed, win, S.settings.tolerance);
    R.alt = alt;
    R.image = regionImage(R);
    S.gesture.wand = R;
    S.timings.push({kind: 'wand', ms: performance.now() - t});
    hint(`region of ${R.area} px (tolerance ${R.tol})` + (R.cut ? `: cut at the edge of the part searched (what is on screen, at ` +
      `most ${WAND_SIDE} px a side around the click; zoom or pan and click again for more)` : '') +
      ': click inside it or Enter to ' + (alt || $('.mlc-wandmode').value === 'subtract' ? 'subtract it' : 'add it') +
      ', Escape to drop it');
    local('wand');
  },
  apply(alt) {
    const R = S.gesture.wand, subtract = alt || $('.mlc-wandmode').value === 'subtract';
    const counts = regionRLE(R);
    if (counts.length > MAX_REGION_COUNTS) { hint('that region is too ragged to send: raise the tolerance, or zoom in'); return; }
    const [bx0, by0, bx1, by1] = R.box;
    send('region', {index: S.selection.index, category: chosenClass(), subtract, x0: R.win[0] + bx0, y0: R.win[1] + by0,
      w: bx1 - bx0, h: by1 - by0, counts});
    S.gesture.wand = null;
  },
  leave() { S.gesture.wand = null; S.picture.wandPixels = null; },  // (a window's pixels: up to 16 MB)
  underlay() {  // the region, in image pixels
    const R = S.gesture.wand;
    if (R) { ctx.globalAlpha = 0.8; ctx.drawImage(R.image, R.win[0] + R.box[0], R.win[1] + R.box[1]); ctx.globalAlpha = 1; }
  },
  keys: {
    commit() { if (!S.gesture.wand) return false; Wand.apply(false); },
    cancel() { if (!S.gesture.wand) return false; S.gesture.wand = null; hint(''); requestDraw(); },
    smaller() { setTolerance(S.settings.tolerance - 4); },
    larger() { setTolerance(S.settings.tolerance + 4); },
  },
};
// A tool: cursor; down(ev, returning), move(d, ev), up(d, ev) for its drags; optional tap(ev) (a handle pressed,
// not moved), grabs (the selected instance's handles are dragged first), hovers (redraw as the pointer moves),
// preview() in screen pixels and underlay() in image pixels, keys {action: fn} (KEYMAP's actions it takes
// before the canvas's own), bar (its toolbar part: its own, shown only while it is the tool), keypoints (the
// keypoint choice shows), leave(). Adding one: its object, its name here, and its `tool:<name>` line in
// annotator/keymap.py; a new kind of edit also needs its operation in canvas.py's OPS (fields, what it runs
// through LabelSession, its cost of the edit rate).
const TOOLS = {select: Select, brush: paintTool(false), eraser: paintTool(true), polygon: Polygon, box: Box,
  keypoint: Keypoint, assist: Assist, wand: Wand};

canvas.addEventListener('contextmenu', (e) => e.preventDefault());
const TEXT_FIELD = (t) => t && t !== root && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
  (t.tagName === 'INPUT' && !['checkbox', 'radio', 'button', 'submit'].includes(t.type)));
canvas.addEventListener('pointerdown', (e) => {
  if (!S.data) return;
  const returning = TEXT_FIELD(document.activeElement);  // this click gives the focus back from a field or a slider
  root.focus({preventScroll: true});
  const ev = eventAt(e);
  canvas.setPointerCapture(e.pointerId);
  if (e.button === 1 || S.gesture.space) { startDrag(DRAGS.pan, ev, {view: {...S.view}}); return; }
  if (e.button === 2) { const h = keypointAt(ev.p.x, ev.p.y); if (h) cycleVisibility(h); return; }
  if (e.button !== 0) return;
  const tool = TOOLS[S.tool], g = tool.grabs ? grab(ev.p.x, ev.p.y) : null;
  if (g) { S.gesture.drag = Object.assign(g, {sx: ev.p.x, sy: ev.p.y, moved: false}); return; }
  tool.down(ev, returning);
});
canvas.addEventListener('pointermove', (e) => {
  const ev = eventAt(e), G = S.gesture, L = S.selection;
  G.pointer = ev.p;
  $('.mlc-pos').textContent = S.data ? `x ${ev.x.toFixed(1)}  y ${ev.y.toFixed(1)}` : '';
  const d = G.drag;
  if (!d) {
    const h = keypointAt(ev.p.x, ev.p.y), i = h ? h.index : hitTest(ev.x, ev.y);
    const changed = i !== L.hover || JSON.stringify(h) !== JSON.stringify(L.hoverKp);
    L.hover = i; L.hoverKp = h;
    if (changed) { const it = inst(i); hint(it ? `#${it.i} ${it.name} · ${it.state}${it.score != null ? ' · ' + it.score.toFixed(2) : ''}` : ''); markItems(); local('hover'); }
    else if (TOOLS[S.tool].hovers) requestDraw();
    return;
  }
  d.moved = d.moved || Math.hypot(ev.p.x - d.sx, ev.p.y - d.sy) > 3;
  d.on.move(d, ev);
});
canvas.addEventListener('pointerup', (e) => {
  const d = S.gesture.drag;
  S.gesture.drag = null;
  if (!d || !S.data) return;
  d.on.up(d, eventAt(e));
  requestDraw();
});
function cycleVisibility(h) {  // visible (2) <-> occluded (1)
  const it = inst(h.index), c = cat(it), k = it.keypoints;
  if (h.index !== S.selection.index) select(h.index);
  send('keypoint', {index: h.index, name: c.keypoints[h.j], x: k[3 * h.j], y: k[3 * h.j + 1], v: k[3 * h.j + 2] === 2 ? 1 : 2});
}
canvas.addEventListener('wheel', (e) => {
  if (!S.data) return;
  e.preventDefault();
  const p = pointerAt(e);
  zoomAt(p.x, p.y, S.view.s * Math.exp(-e.deltaY * 0.0015));
  local('zoom');
}, {passive: false});
canvas.addEventListener('pointerenter', () => { S.gesture.over = true; });
canvas.addEventListener('pointerleave', () => {
  S.gesture.over = false; S.selection.hover = null; S.selection.hoverKp = null; requestDraw();
});

// --- keyboard: every key is looked up in KEYMAP; the current tool's own keys first, then the canvas's -----
function nextUnreviewed(exclude) {  // as LabelSession.next_unreviewed: the best-scored shown proposal left
  const todo = S.data.instances.filter((it) => shown(it) && it.state === 'proposed' && it.i !== exclude);
  todo.sort((a, b) => (b.score || 0) - (a.score || 0) || a.i - b.i);
  return todo.length ? todo[0].i : null;
}
function review(op) {  // shown at once, so quick repeated keys each review the next instance
  const it = inst(S.selection.index);
  if (!it) return;
  const seq = send(op, {index: it.i});
  showUntilAnswered(seq, it.i, 'state', op === 'accept' ? 'accepted' : 'rejected');
  S.selection.index = nextUnreviewed(it.i);
  refreshToolbar();
  local('review');
}
function rejectRest() {  // every proposal left rejected: a rejected instance is hidden, so it is no longer selected
  send('reject_rest');
  const it = inst(S.selection.index);
  if (it && it.state === 'proposed') { S.selection.index = null; refreshToolbar(false); }  // (the server does the same)
  local('review');
}
S.act = (op, fields) => {  // the page's buttons (Save, Accept, Undo, ...) act here, queued behind the edits on their way
  if (!S.data) { $('.mlc-message').textContent = 'Open an image first.'; return; }
  const needs = ['accept', 'reject', 'delete', 'box_from_mask'].includes(op);
  if (needs && S.selection.index == null) {
    $('.mlc-message').textContent = 'select an instance first (click it, Tab, or pick it in the list)';
  } else if (op === 'accept' || op === 'reject') review(op);
  else if (op === 'reject_rest') rejectRest();
  else send(op, needs ? {index: S.selection.index} : (fields || {}));
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
  const k = list.indexOf(S.selection.index);
  select(list[k < 0 ? (step > 0 ? 0 : list.length - 1) : (k + step + list.length) % list.length]);
}
function brushSize(f) {  // on screen, at most the server's limit in image pixels at this zoom
  const o = S.settings;
  o.radius = Math.max(1, Math.min(200, MAX_BRUSH * S.view.s, o.radius * f));
  hint(`brush radius ${o.radius.toFixed(0)} px (${(o.radius / S.view.s).toFixed(0)} image px)`); requestDraw();
}
const ACTIONS = {  // what a key does (annotator/keymap.py names the action); false: not done, the key goes on
  next_instance: () => cycle(1),
  prev_instance: () => cycle(-1),
  accept: () => (S.selection.index == null ? false : review('accept')),
  reject: () => (S.selection.index == null ? false : review('reject')),
  accept_all: () => send('accept_all'),
  reject_rest: () => rejectRest(),
  delete: () => (S.selection.index == null ? false : send('delete', {index: S.selection.index})),
  save: () => S.act('save'),
  undo: () => send('undo'),
  redo: () => send('redo'),
  smaller: () => brushSize(0.8),
  larger: () => brushSize(1.25),
  class: (e) => {  // the nth class of the class menu
    const o = $('.mlc-class').options, n = Number(e.key);
    if (n >= o.length) { hint(`there is no class ${n} in the class menu`); return; }
    pickClass(o[n].value);
    hint(`class: ${o[n].textContent}`);
  },
  commit: () => false,
  cancel: () => { if (S.gesture.drag) { S.gesture.drag = null; requestDraw(); } else select(null); },
  occlude: () => { const h = S.selection.hoverKp; if (h) cycleVisibility(h); },
  fit: () => { fit(); local('fit'); },
  one_to_one: () => { oneToOne(); local('zoom'); },
  pan: () => { S.gesture.space = true; },
};
for (const t of Object.keys(TOOLS)) ACTIONS['tool:' + t] = () => setTool(t);
S.keymap = (() => {  // checked by tests: every action the table names is done here, and nothing is done that it does not name
  const named = new Set(KEYMAP.map((b) => b.action));
  const done = new Set(Object.keys(ACTIONS));
  for (const t of Object.values(TOOLS)) for (const a of Object.keys(t.keys || {})) done.add(a);
  return {unhandled: KEYMAP.filter((b) => b.canvas && !done.has(b.action)).map((b) => b.action),
    unbound: [...done].filter((a) => !named.has(a)), tools: Object.keys(TOOLS)};
})();
function onKey(e) {
  if (typingInto(e.target, e) || !S.data) return;
  const b = BINDINGS.get(keyId(e));
  if (!b) return;
  const stop = () => { e.preventDefault(); e.stopImmediatePropagation(); };
  if (!b.canvas) {  // the page's key (it clicks the button): after the edits still on their way
    if (b.button && !queueIdle()) { stop(); whenIdle(() => clickButton(b.button)); }
    return;
  }
  if (!(S.gesture.over || root.contains(document.activeElement))) return;
  const own = TOOLS[S.tool].keys || {};
  for (const fn of [own[b.action], ACTIONS[b.action]]) {
    if (fn && fn(e) !== false) { stop(); return; }
  }
}
window.addEventListener('keydown', onKey, true);
window.addEventListener('keyup', (e) => { const b = BINDINGS.get(keyId(e)); if (b && b.action === 'pan') S.gesture.space = false; }, true);
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
  const P = S.picture, Q = S.queue, L = S.selection;
  if (!data || typeof data !== 'object' || data.image_id == null) {
    S.data = null; S.byIndex = new Map(); S.imageId = null; P.levels = []; S.pending = []; $('.mlc-info').textContent = '';
    showPresence([]); showHistory([]); refreshList(); requestDraw(); return;
  }
  $('.mlc-info').textContent = `Image ${data.image_id} · ${data.file_name} · ${data.width}×${data.height} · status ` +
    `${data.status} · ${data.unreviewed} unreviewed` + (data.dirty ? ' · unsaved edits' : '') +
    (data.pending && data.pending.length ? ` · ${data.pending.length} refused edit(s) to decide` : '');
  showHistory(data.history);
  S.rev = data.rev;
  S.data = data;
  S.pending = data.pending || [];
  if (!S.pending.some((p) => p.item === L.pickedItem)) L.pickedItem = null;
  if (!S.pending.some((p) => p.item === L.hoverItem)) L.hoverItem = null;
  S.byIndex = new Map(data.instances.map((it) => [it.i, it]));
  if (newImage) {
    S.imageId = data.image_id; P.masks.clear(); P.wandPixels = null; Q.strokes = []; Q.local = [];
    S.gesture.poly = []; S.gesture.wand = null; S.gesture.drag = null;
    showPresence([]); pollPresence();  // the opener hears at once who else is on this image
    L.index = data.selected;
    S.settings.minScore = data.min_score || 0;
    $('.mlc-score').value = String(S.settings.minScore); $('.mlc-score-v').textContent = S.settings.minScore.toFixed(2);
    const jump = document.activeElement;  // an id typed and opened: the keys go back to labeling
    if (jump && jump.closest && jump.closest('#jump-id')) { jump.blur(); root.focus({preventScroll: true}); }
    loadImage(data.image_id).catch((err) => hint('the image could not be shown: ' + err));
  }
  for (const [seq, sent] of [...Q.sentAt]) {  // server actions: from the input to the redrawn answer
    if (seq <= data.seq) { Q.answered.push(Object.assign({seq, got: performance.now()}, sent)); Q.sentAt.delete(seq); }
  }
  if (data.seq >= Q.seq) L.index = data.selected;  // no local change is waiting for an answer
  if (Q.inflight != null && data.seq >= Q.inflight) { Q.inflight = null; setTimeout(pump, 0); }
  Q.strokes = Q.strokes.filter((st) => st.seq > data.seq);
  for (const r of Q.local.slice().reverse()) {  // answered: an instance the answer left out gets its value back
    if (r.seq <= data.seq && S.byIndex.get(r.i) === r.obj) r.obj[r.field] = r.was;
  }
  Q.local = Q.local.filter((r) => r.seq > data.seq);  // edits still on their way: shown over the answer
  for (const r of Q.local) { const it = inst(r.i); if (it) { if (it !== r.obj) { r.obj = it; r.was = it[r.field]; } it[r.field] = r.value; } }
  for (const [key, e] of P.masks) { if (!e.used) P.masks.delete(key); else e.used = false; }
  refreshToolbar();
  if (!P.fitted && P.levels.length) fit();
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
  if ((S.data && S.data.dirty) || S.queue.outbox.length || S.queue.inflight != null) { e.preventDefault(); e.returnValue = ''; }
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
