"""The Python side of the browser canvas (``canvas.js``, ``canvas.css``): what it is sent and what it sends.

- ``picture(store, image_id)``: the image, once per opened image (a data URL the browser decodes off the main thread).
- ``payload(page)``: the open image's labels (``page.session``) as data: per instance its mask as a COCO RLE of the mask's bounding crop, box,
  polygons (for polygon annotations, so their vertices can be dragged), keypoints, colour and review state;
  the categories' keypoint names and skeletons. The browser draws, hit-tests, zooms and pans from it.
- ``apply(page, message, assist)``: one edit message from the browser (a stroke, a moved vertex, box or
  keypoint, a review key, an assist box or click, re-applying or dropping an edit a save refused) applied
  through the labeling logic, which stays the source of truth (undo, save, conflicts). How a stroke becomes
  a mask: the brush's object in canvas.js collects the pointer path and radius in image pixels; ``_stroke``
  here hands it to ``LabelSession.paint``. A region (the magic wand's) arrives as one ``region`` message, a
  COCO RLE of its crop, checked by ``_region``. Every operation is one line of ``OPS``: what it runs, its
  fields (each checked by its kind: annotator.messages) and its cost of the login's edit rate (``cost``).
- ``JS``: canvas.js with the page's keymap (annotator.keymap) in front of it, as data.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from PIL import Image as PILImage
from pycocotools import mask as coco_mask

from annotator import keymap, skeleton
from annotator.labeling import MAX_BRUSH_RADIUS, LabelSession, SaveConflict, stroke_work
from annotator.messages import (
    BOX,
    FLAG,
    INT,
    NUM,
    TEXT,
    Field,
    fields,
    one_of,
    points_upto,
    text,
    whole_in,
)
from annotator.page import Page
from annotator.render import color
from db import annotations, crops
from db.errors import UserError
from db.instances import Instances
from db.masks import MaskError
from db.media import browser_ready, load_rgb
from db.store import Store

HERE = Path(__file__).parent
JS = keymap.canvas_prelude() + (HERE / "canvas.js").read_text(encoding="utf-8")  # the keymap as data in front
CSS = (HERE / "canvas.css").read_text(encoding="utf-8")
TEMPLATE = '<div class="mlc-root" tabindex="0"></div>'  # static: canvas.js builds the toolbar and canvas in it
JS_STATE = "document.querySelector('#label-canvas .mlc-root').__maskloop"  # canvas.js's state and act()

LOSSLESS_PIXELS = 2_000_000  # images up to this many pixels go to the browser as PNG, larger as JPEG
MAX_STROKE_POINTS = 20_000
MAX_POLYGON_POINTS = 10_000
MAX_REGION_SIDE = 2048  # a region's crop at most this a side (canvas.js's WAND_SIDE: the wand's window)
MAX_REGION_PIXELS = MAX_REGION_SIDE ** 2
MAX_REGION_COUNTS = 200_000  # characters of a region's RLE (canvas.js refuses more): twice its JSON (a backslash is 2) fits CANVAS_BODY


class Assist(Protocol):
    def assist_box(self, image_id: int, box_xyxy, category_id: int | None = None) -> dict: ...

    def assist_point(self, image_id: int, x: float, y: float, category_id: int | None = None) -> dict: ...


def picture(store: Store, image_id: int) -> dict[str, Any]:
    """An image for the canvas, sent once per opened image: the stored file itself when a browser shows it
    with the very pixels the labels refer to (an 8-bit JPEG or PNG: no decoding or encoding here, which for a
    24 MP photo is most of the wait), else re-encoded: PNG (lossless) for ordinary sizes, JPEG for very large
    ones (EXIF orientation is applied at import; 16-bit images are reduced)."""
    im = annotations.images(store, [image_id]).get(image_id)
    if im is None:
        raise UserError(f"no image with id {image_id}")
    cannot = f"image {image_id} ({im.file_name}, {im.width}x{im.height}) cannot be shown"
    if max(im.width, im.height) > store.settings.max_side:  # (an older release imported it)
        raise UserError(f"{cannot}: a side over {store.settings.max_side} pixels is wider than a browser canvas")
    path = store.media_file(im.media_path)
    try:
        mime = browser_ready(path)
        if mime is not None:
            return {"image_id": image_id, "width": im.width, "height": im.height,
                    "url": f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")}
        pix = np.asarray(load_rgb(path))
        buf = io.BytesIO()
        if pix.shape[0] * pix.shape[1] <= LOSSLESS_PIXELS:
            PILImage.fromarray(pix).save(buf, format="PNG", compress_level=1)
            mime = "image/png"
        else:
            PILImage.fromarray(pix).save(buf, format="JPEG", quality=92)
            mime = "image/jpeg"
    except (OSError, ValueError, MemoryError) as e:  # a missing or unreadable file, a size an encoder refuses
        raise UserError(f"{cannot}: {type(e).__name__}: {e}") from None
    return {"image_id": image_id, "width": int(pix.shape[1]), "height": int(pix.shape[0]),
            "url": f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")}


def _crop_rle(page: Page, of: Instances, i: int, used: dict) -> dict[str, Any] | None:
    """Instance ``i``'s mask as the canvas takes it, {x, y, w, h, counts}: COCO compressed RLE (column-major)
    of its crop. Cached on the page by the mask's stored segmentation (an edit gives a new one), so a mask is
    decoded once for the browser; ``used`` collects this answer's entries (the cache keeps only those)."""
    seg = of.segmentations[i]  # (an edit not encoded yet is encoded now)
    if not seg:
        return None
    key = seg.get("counts") if isinstance(seg, dict) else json.dumps(seg)
    cache = page.display_cache.get("crops", {})
    hit = used.get(key) or cache.get(key)
    if hit is None:
        crop = of.crop(i)
        if crop is None or crop.m.size == 0:
            return None
        rle = coco_mask.encode(np.asfortranarray(crop.m.astype(np.uint8)))
        hit = {"x": crop.x, "y": crop.y, "w": crop.w, "h": crop.h, "counts": rle["counts"].decode("ascii")}
    used[key] = hit
    return hit


def _hex(i: int) -> str:
    return "#%02x%02x%02x" % color(i)


def _when(t) -> str | None:
    """A stored (naive UTC) time for the browser, which shows it in its own time zone."""
    return None if t is None else t.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _refused(page: Page, used: dict) -> list[dict[str, Any]]:
    """This person's edits a save refused (annotator.conflicts), each with the other person's current
    version of the same instance (``theirs``: None when its row is gone or it was drawn here)."""
    ls = page.session
    out = []
    for r in ls.pending:
        mine, j = r.mine, ls.conflicts.current_index(r)
        cid = mine.category_ids[0]
        theirs = None
        if j is not None:
            by, at = ls.reviewers.get(r.ann_id, ("", None))
            tc = ls.instances.category_ids[j]
            theirs = {"i": j, "category_id": tc, "state": ls.instances.states[j], "area": float(ls.instances.area(j)),
                      "name": ls.categories[tc].name if tc in ls.categories else str(tc),
                      "deleted": ls.instances.deleted[j], "by": by or None, "at": _when(at)}
        out.append({
            "item": r.key, "kind": r.kind, "category_id": cid, "state": mine.states[0], "source": mine.sources[0],
            "name": ls.categories[cid].name if cid in ls.categories else r.category_name,
            "area": float(mine.area(0)), "bbox": [float(v) for v in mine.bboxes[0]],
            "mask": _crop_rle(page, mine, 0, used), "keypoints": mine.keypoints[0], "blocked": ls.conflicts.blocked(r),
            "color": _hex(j if j is not None else len(ls.instances) + r.key), "theirs": theirs})
    return out


MANY_INSTANCES = 2000  # an image with more: answered with the instances that changed (``delta``), and its
# labels reach the page by the canvas's own call rather than through a label event (annotator.label_tab)


def payload(page: Page, message: str = "", delta: bool = False) -> dict[str, Any]:
    """Everything the canvas shows for the page's open image; ``seq`` is the last edit message applied,
    ``message`` what to tell the person (shown as text, never as HTML). After a refused save, ``pending``
    lists this person's refused edits and ``theirs`` says who saved the labels shown, and when.

    With ``delta``, for an image of over MANY_INSTANCES instances, ``instances`` holds only those that differ
    from the last answer built for the page (``base``: that answer's ``rev``), and ``removed`` the indices it
    held that are gone: the canvas merges them into what it shows (or asks for the whole when its ``rev`` is
    not ``base``). An edit on an image of 20,000 instances then answers in kilobytes, not megabytes."""
    ls = page.session
    inst = ls.instances
    page.rev += 1
    used: dict = {}  # the masks' crops as sent (page.display_cache["crops"] keeps these for the next answer)
    shown = []
    for i in range(len(inst)):
        if inst.deleted[i]:
            continue
        cid = inst.category_ids[i]
        shown.append({
            "i": i, "category_id": cid, "name": ls.categories[cid].name if cid in ls.categories else str(cid),
            "color": _hex(i), "state": inst.states[i], "source": inst.sources[i], "score": inst.scores[i],
            "edited": inst.edited[i], "bbox": [float(v) for v in inst.bboxes[i]], "mask": _crop_rle(page, inst, i, used),
            "polygons": inst.polygons(i),
            "keypoints": inst.keypoints[i], "area": float(inst.area(i))})
    data = {
        "image_id": ls.image_id, "width": ls.width, "height": ls.height, "seq": page.seq, "rev": page.rev,
        "token": page.token, "message": message,
        "file_name": ls.file_name, "status": ls.status, "next": page.next,
        "selected": ls.selected, "min_score": ls.min_score, "dirty": ls.dirty, "unreviewed": ls.unreviewed(),
        "instances": shown, "history": _history(page),
        "pending": _refused(page, used),
        "theirs": {"by": theirs[0], "at": _when(theirs[1])} if (theirs := ls.conflicts.theirs) else None,
        "categories": {str(c.id): {"name": c.name, "keypoints": c.keypoints, "skeleton": c.skeleton}
                       for c in ls.categories.values()},
    }
    page.display_cache["crops"] = used
    if len(shown) > MANY_INSTANCES:
        _as_delta(page, data, delta)
    else:
        page.display_cache.pop("sent", None)
    # what was decoded for this answer is not kept: between requests a page holds its labels as RLE (a 24 MP
    # photo's masks would otherwise stay decoded, a byte a pixel of every object, for as long as the page lives)
    inst.forget_decoded()
    for r in ls.pending:
        r.mine.forget_decoded()
    return data


def _as_delta(page: Page, data: dict[str, Any], delta: bool) -> None:
    """Remember what this answer holds; with ``delta``, cut it to what changed since the last one."""
    sent = page.display_cache.get("sent")
    now = {d["i"]: d for d in data["instances"]}
    if delta and sent is not None and sent[0] == data["image_id"]:
        before = sent[2]
        data["instances"] = [d for i, d in now.items() if before.get(i) != d]
        data["removed"] = [i for i in before if i not in now]
        data["delta"], data["base"] = True, sent[1]
    page.display_cache["sent"] = (data["image_id"], data["rev"], now)


def _history(page: Page) -> list[dict[str, Any]]:
    """Who did what to the image (db.annotations.history), read again after a save or a verdict."""
    ls = page.session
    key = (ls.image_id, ls.row_version, ls.status, ls.verdicts)
    cached = page.display_cache.get("history")
    if cached is None or cached[0] != key:
        cached = (key, [{"at": e.at.strftime("%Y-%m-%d %H:%M UTC"), "user": e.user, "what": e.what,
                         "current": e.current} for e in annotations.history(ls.store, ls.image_id)])
        page.display_cache["history"] = cached
    return cached[1]


# --- edit messages: each operation's fields (annotator.messages) and what it does ------------------------
def found_instance(ls: LabelSession, got: dict) -> Instances:
    """An assist answer (the /assist_box dict) as one Instances of this image, source 'assist', made by the
    version that answered (so the save's review counts for it)."""
    found = Instances.from_coco([{k: v for k, v in got.items() if v is not None and k != "model_version_id"}],
                                ls.height, ls.width, source="assist", state="proposed")
    found.model_version_ids[0] = got.get("model_version_id")
    return found


def _new(ls: LabelSession, m: dict, takes_away: bool, from_what: str, to_what: str, **shape) -> int:
    """An edit with nothing selected: one that takes pixels away (``takes_away``) is refused, one that adds
    them becomes a new instance of the message's ``category`` (refused without one); its index."""
    if takes_away:
        raise UserError(f"select an instance to {from_what}")
    if m["category"] is None:
        raise UserError(f"select an instance to {to_what}, or choose the class of a new instance")
    return ls.new_instance(m["category"], **shape)


def _stroke(ls: LabelSession, m: dict) -> str:
    """A brush or eraser stroke: the pointer path in image pixels and its radius, painted at full
    resolution on the selected instance (with none selected, the brush starts a new one of ``category``)."""
    if m["index"] is None:
        i = _new(ls, m, m["erase"], "erase from", "paint on", stroke=(m["points"], m["radius"]))
        return f"new instance #{i}"
    ls.paint(m["points"], m["radius"], erase=m["erase"], index=m["index"])
    return "erased" if m["erase"] else "painted"


def _polygon(ls: LabelSession, m: dict) -> str:
    mode, index = m["mode"], m["index"]
    if mode == "new" or (mode == "auto" and index is None):
        if m["category"] is None:
            raise UserError("choose the class of the new instance first")
        return f"new instance #{ls.new_instance(m['category'], polygon=m['points'])}"
    ls.polygon(m["points"], subtract=mode == "subtract", index=index)
    return "polygon subtracted" if mode == "subtract" else "polygon added"


def _box_edit(ls: LabelSession, m: dict, assist: Assist | None, page: Page) -> str:
    """A box drawn or its handles dragged. An assist answer nobody has touched yet is asked again for the
    new box, keeping its class. Any other instance with a mask: a box inside the mask's cuts the mask to it;
    a box reaching outside it asks the model for the object in the new box (its class kept) and the mask is
    replaced (one undo step), and without a model it is refused (LabelSession.set_box says why). Without a
    mask the instance just gets the box."""
    i = ls._need(m["index"])
    it = ls.instances[i]
    if it.source == "assist" and it.state == "proposed" and assist is not None:
        got = assist.assist_box(ls.image_id, m["box"], it.category_id)
        ls.replace_found(i, found_instance(ls, got))
        return f"assist ran again on the new box: {ls.categories[got['category_id']].name} ({got['score']:.2f})"
    if assist is not None and it.crop is not None and ls.box_grows(i, *m["box"]):
        found = found_instance(ls, assist.assist_box(ls.image_id, m["box"], it.category_id))
        crop = found.crop(0)
        if crop is None or crop.empty():
            raise UserError("the model found nothing in the larger box; nothing was changed (paint the missing part "
                            "with the brush)")
        ls.replace_mask(crop, index=i)
        return f"the model found the {ls.categories[it.category_id].name} in the larger box: its mask is replaced (z undoes)"
    grows = it.crop is not None and ls.box_grows(i, *m["box"])
    ls.set_box(*m["box"], index=i)
    if grows:
        return ("the mask is cut to the box where the box is inside it; outside it a mask cannot grow without a model: "
                "paint the rest with the brush (b)")
    return "box set"


def _region(ls: LabelSession, m: dict) -> str:
    """A region (the magic wand's: canvas.js growRegion) as COCO compressed RLE (column-major) of its crop at
    (x0, y0), w x h: checked against the image and the limits, then added to (or with ``subtract`` taken from)
    the selected instance's mask like a stroke, or with none selected a new instance of ``category``."""
    x0, y0, w, h = m["x0"], m["y0"], m["w"], m["h"]
    if w * h > MAX_REGION_PIXELS:
        raise UserError(f"edit message: a region of {w}x{h} pixels is over the limit of {MAX_REGION_PIXELS:,}")
    if x0 + w > ls.width or y0 + h > ls.height:
        raise UserError(f"edit message: the region {w}x{h} at ({x0}, {y0}) reaches outside the "
                        f"{ls.width}x{ls.height} image")
    try:
        crop = crops.decode_crop({"size": [h, w], "counts": m["counts"]}, h, w)
    except MaskError as e:
        raise UserError(f"edit message: counts: {e}") from None
    region = crops.Crop(x0 + crop.x, y0 + crop.y, crop.m)
    if region.empty():
        raise UserError("the region is empty")
    if m["index"] is None:
        i = _new(ls, m, m["subtract"], "subtract the region from", "add the region to", region=region)
        return f"new instance #{i} ({region.area()} px)"
    ls.region(region, subtract=m["subtract"], index=m["index"])
    return f"region of {region.area()} px {'subtracted' if m['subtract'] else 'added'}"


def _skeleton(ls: LabelSession, m: dict) -> str:
    """The selected instance's whole skeleton laid out in a box (annotator.skeleton): as the category's labeled
    instances are, else a default layout; the points are then dragged into place."""
    i = ls._need(m["index"])
    cid = ls.instances.category_ids[i]
    names = ls.categories[cid].keypoints
    if not names:
        raise UserError(f"category '{ls.categories[cid].name}' has no keypoints")
    layout, source = skeleton.template(ls, cid)
    ls.place_keypoints(skeleton.placed(layout, m["box"]), index=i)
    return f"{len(names)} keypoints placed ({source}): drag each into place"


def _assist(ls: LabelSession, m: dict, assist: Assist | None, page: Page) -> str:
    if assist is None:
        raise UserError("box assist is not available here")
    if "box" in m:
        got = assist.assist_box(ls.image_id, m["box"], m["category"])
    else:
        got = assist.assist_point(ls.image_id, m["x"], m["y"], m["category"])
    i = ls.add_found(found_instance(ls, got))
    name = ls.categories[got["category_id"]].name
    return f"assist found #{i} {name} (score {got['score']:.2f}): accept (a), edit it, or drag its box"


def _keypoint(ls: LabelSession, m: dict) -> str:
    ls.set_keypoint(m["name"], m["x"], m["y"], m["v"], index=m["index"])
    return f"{m['name']} {'removed' if m['v'] == 0 else 'placed'}"


def _save(ls: LabelSession, page: Page) -> str:
    """Save as the page's user. Proposals nobody reviewed stay proposals (the image stays in review); a
    conflict shows the labels saved meanwhile and lists this person's edits next to them, to re-apply or drop
    (annotator.conflicts)."""
    try:
        left = ls.save(page.user)
    except SaveConflict:
        return ls.conflicts.review()
    if left:
        return (f"saved image {ls.image_id}; {left} proposal(s) are not reviewed yet, so the image stays in "
                "review: review them, or reject the rest (Shift+R) and save")
    return f"saved image {ls.image_id}: done"


def _again(ls: LabelSession, assist: Any, only_if_outdated: bool) -> str:
    """New proposals from the active model for the open image (``only_if_outdated``: only when its proposals
    are not the active model's), then the labels read again with this person's unsaved changes kept on top
    (annotator.conflicts.ConflictReview.refresh)."""
    said = ""
    if not only_if_outdated and ls.status == "done":  # (new proposals on finished labels would go unreviewed)
        raise UserError(f"image {ls.image_id} is done: its labels are finished, and proposals are for images still "
                        "to label")
    if assist is not None and (not only_if_outdated or assist.outdated(ls.image_id) is not None):
        r = assist.propose_now(ls.image_id)
        said = f"{r['proposals']} new proposal(s) from the active model; "
    return said + ls.conflicts.refresh()


def _discard(ls: LabelSession) -> str:
    if not ls.dirty:
        return "nothing to discard: no unsaved edits"
    ls.discard()
    return "your unsaved edits are discarded"


def _review(ls: LabelSession, state: str, index: int) -> str:
    nxt = ls.review(state, index)
    return f"{state}; " + ("next: #%d" % nxt if nxt is not None else "no unreviewed proposals left")


def _class(ls: LabelSession, m: dict) -> str:
    ls.set_class(m["category"], index=m["index"])
    return f"class set to {ls.categories[m['category']].name}"


@dataclass(frozen=True)
class Op:
    """One edit operation: what it does (with the page's labels, the message's checked fields, the assist
    model or None, and the page) and its fields (annotator.messages)."""
    run: Callable[[LabelSession, dict, Assist | None, Page], str | None]
    fields: dict[str, Field] = field(default_factory=dict)
    cost: float | Callable[[dict], float] = 0.1  # of its login's edit rate (``cost``): a click's tenth of a unit


RUNS_THE_MODEL = 1.0  # what runs the model (assist, proposals) or writes (save) costs a unit of the edit rate
PER_UNIT = 1e7  # what paints pixels costs a unit more per 10 million pixels it may cover


def _stroke_cost(message: dict) -> float:
    """A brush stroke's: the pixels its dabs may cover (read as leniently as can be: a bad message is refused
    later, by name, at a tenth of a unit)."""
    points, radius = message.get("points"), message.get("radius")
    if not isinstance(points, list) or isinstance(radius, bool) or not isinstance(radius, (int, float)):
        return 0.1
    try:
        xy = np.asarray(points[:100_000], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return 0.1
    if not np.isfinite(xy).all() or not math.isfinite(radius):
        return 0.1
    return 0.1 + stroke_work(xy, min(float(radius), MAX_BRUSH_RADIUS)) / PER_UNIT


def _region_cost(message: dict) -> float:
    """The magic wand's: the pixels of its crop (2048 x 2048 at most)."""
    w, h = message.get("w"), message.get("h")
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 16 for v in (w, h))
    return 0.1 + (w * h / PER_UNIT if ok else 0.0)


def _polygon_cost(message: dict) -> float:
    """A polygon's: the pixels of its box, which its fill may cover."""
    try:
        xy = np.asarray(message.get("points")[:MAX_POLYGON_POINTS], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError, AttributeError):
        return 0.1
    if not len(xy) or not np.isfinite(xy).all():
        return 0.1
    w, h = np.clip(np.ptp(xy, axis=0), 0, 1 << 16)
    return 0.1 + float(w * h) / PER_UNIT


STROKE = points_upto(MAX_STROKE_POINTS)
POLYGON = points_upto(MAX_POLYGON_POINTS)
AT = {"x": NUM, "y": NUM}
WHICH = {"index": INT}  # the instance it acts on (its index in the canvas data)
NOTE = {"note": TEXT.or_("")}
OPS = {
    "class": Op(lambda ls, m, a, p: _class(ls, m), {**WHICH, "category": INT}),
    "select": Op(lambda ls, m, a, p: ls.select(m["index"]), {"index": INT.opt}),
    "view": Op(lambda ls, m, a, p: ""),
    "accept": Op(lambda ls, m, a, p: _review(ls, "accepted", m["index"]), WHICH),
    "reject": Op(lambda ls, m, a, p: _review(ls, "rejected", m["index"]), WHICH),
    "accept_all": Op(lambda ls, m, a, p: f"accepted {ls.accept_all_shown(ls.min_score)}"),
    "reject_rest": Op(lambda ls, m, a, p: f"rejected {ls.reject_rest()} unreviewed proposal(s)"),
    "delete": Op(lambda ls, m, a, p: ls.delete(m["index"]) or "deleted", WHICH),
    "stroke": Op(lambda ls, m, a, p: _stroke(ls, m),
                 {"points": Field(STROKE), "radius": NUM, "erase": FLAG.or_(False), "index": INT.opt,
                  "category": INT.opt}, cost=_stroke_cost),
    "polygon": Op(lambda ls, m, a, p: _polygon(ls, m),
                  {"points": Field(POLYGON), "mode": Field(one_of("new", "add", "subtract", "auto")).or_("auto"),
                   "index": INT.opt, "category": INT.opt}, cost=_polygon_cost),
    "vertex": Op(lambda ls, m, a, p: ls.move_vertex(m["part"], m["vertex"], m["x"], m["y"], index=m["index"])
                 or "vertex moved", {**WHICH, "part": INT, "vertex": INT, **AT}),
    "box": Op(_box_edit, {**WHICH, "box": BOX}, cost=RUNS_THE_MODEL),
    "keypoint": Op(lambda ls, m, a, p: _keypoint(ls, m),
                   {**WHICH, "name": TEXT, **AT, "v": Field(whole_in(0, 2))}),
    "region": Op(lambda ls, m, a, p: _region(ls, m),
                 {"x0": Field(whole_in(0, 2 ** 31)), "y0": Field(whole_in(0, 2 ** 31)),
                  "w": Field(whole_in(1, MAX_REGION_SIDE)), "h": Field(whole_in(1, MAX_REGION_SIDE)),
                  "counts": Field(lambda v, what: text(v, what, MAX_REGION_COUNTS)), "subtract": FLAG.or_(False),
                  "index": INT.opt, "category": INT.opt}, cost=_region_cost),
    "skeleton": Op(lambda ls, m, a, p: _skeleton(ls, m), {**WHICH, "box": BOX}),
    "assist": Op(_assist, {"box": BOX, "category": INT.opt}, cost=RUNS_THE_MODEL),
    "assist_point": Op(_assist, {**AT, "category": INT.opt}, cost=RUNS_THE_MODEL),
    "box_from_mask": Op(lambda ls, m, a, p: ls.box_from_mask(m["index"]) or "box fitted to the mask",
                        {"index": INT.opt}),
    "save": Op(lambda ls, m, a, p: _save(ls, p), cost=RUNS_THE_MODEL),
    "approve": Op(lambda ls, m, a, p: ls.give_verdict("approved", p.user, p.role, m["note"]), NOTE),
    "send_back": Op(lambda ls, m, a, p: ls.give_verdict("sent_back", p.user, p.role, m["note"]), NOTE),
    "discard": Op(lambda ls, m, a, p: _discard(ls)),
    "refresh": Op(lambda ls, m, a, p: _again(ls, a, only_if_outdated=True), cost=RUNS_THE_MODEL),
    "propose_again": Op(lambda ls, m, a, p: _again(ls, a, only_if_outdated=False), cost=RUNS_THE_MODEL),
    "undo": Op(lambda ls, m, a, p: "" if ls.undo() else "nothing to undo"),
    "redo": Op(lambda ls, m, a, p: "" if ls.redo() else "nothing to redo"),
    # after a refused save: this person's edits, listed next to the labels saved meanwhile ({"item": key})
    "reapply": Op(lambda ls, m, a, p: ls.conflicts.reapply(m["item"]), {"item": INT}),
    "drop_mine": Op(lambda ls, m, a, p: ls.conflicts.drop(m["item"]), {"item": INT}),
    "reapply_all": Op(lambda ls, m, a, p: ls.conflicts.reapply_all()),
    "drop_all": Op(lambda ls, m, a, p: ls.conflicts.drop_all()),
}
VIEW = {"min_score": NUM.opt}  # any message may carry the canvas's minimum score to show


def cost(message: Any) -> float:
    """What one edit message costs of its login's edit rate (``annotator.page.EditRate``): its operation's
    ``cost`` (a tenth of a unit for a click; see ``Op``), read before the message is checked."""
    op = OPS.get(message.get("op")) if isinstance(message, dict) and isinstance(message.get("op"), str) else None
    if op is None:
        return 0.1
    return op.cost(message) if callable(op.cost) else op.cost


def apply(page: Page, msg: Any, assist: Assist | None = None) -> str:
    """Apply one edit message from the canvas to the page's open image; returns what to tell the person. Bad
    messages (a field missing or of the wrong kind: annotator.messages) and refused edits raise UserError
    naming the problem; nothing changes then."""
    ls = page.session
    if ls is None:
        raise UserError(page.ended or "open an image first")
    op = msg.get("op") if isinstance(msg, dict) else msg
    if not isinstance(msg, dict) or not isinstance(op, str) or op not in OPS:
        raise UserError(f"unknown canvas action {str(op)[:80]!r}")
    checked = fields(OPS[op].fields, msg)  # (every field first: a bad one changes nothing)
    min_score = fields(VIEW, msg)["min_score"]
    if min_score is not None:
        ls.min_score = min(max(min_score, 0.0), 1.0)
    return OPS[op].run(ls, checked, assist, page) or ""
