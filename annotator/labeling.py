"""Labeling logic for one image, without a browser: review state, edits, save with optimistic locking.
The Gradio callbacks call these methods; so do the tests and bench/ui.py. Undo and redo are an
``annotator.history.EditHistory``; a refused save's edits are an ``annotator.conflicts.ConflictReview``;
what a browser page holds (its token, login, sequence numbers, display cache) is an ``annotator.page.Page``.

Coordinates are full-resolution image pixels; each mask is held as a ``db.crops.Crop`` of its box, and an
edit works on the pixels it touches (a stroke is drawn within its own box), never on a full frame. Boxes
are COCO xywh.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Any, Sequence

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from annotator.conflicts import KIND_NAMES, ConflictReview, Refused  # noqa: F401 - re-exported
from annotator.history import DEFAULT_BUDGET, NOTHING, EditHistory
from db import annotations, claims, compare, crops, users
from db import categories as cat_db
from db import masks as mask_codec
from db.annotations import SaveConflict
from db.errors import UserError
from db.instances import Instance, Instances
from db.schema import utcnow
from db.store import Store

__all__ = ["LabelSession", "CategoryInfo", "Refused", "SaveConflict", "review_summary"]

IDLE_GAP = 60.0  # seconds: a longer pause between two actions is not counted as time spent labeling
MAX_BRUSH_RADIUS = 1024.0  # image pixels: a larger brush is refused (draw a polygon instead)
MAX_STROKE_WORK = 150_000_000  # pixels one stroke message may draw (its dabs and line, overlaps counted)
LINE_WEIGHT = 8  # a pixel of a stroke's line costs this many of a dab's (measured: PIL's wide lines)


def _points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pointer positions as floats; NaN or infinite coordinates (a malformed request) are refused."""
    out = []
    for p in points:
        try:
            x, y = float(p[0]), float(p[1])
        except (TypeError, ValueError, IndexError):
            raise UserError(f"not a point: {p!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise UserError(f"not a point in the image: ({x}, {y})")
        out.append((x, y))
    return out


def stroke_work(points: Sequence[tuple[float, float]], radius: float) -> float:
    """What drawing a stroke costs, in pixels: its dabs, and its line (weighted: a long thin line costs more
    per pixel than a filled disc). The one measure of a stroke for its limit and for the edit rate."""
    r = max(0.5, float(radius))
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    length = float(np.hypot(*np.diff(xy, axis=0).T).sum()) if len(xy) > 1 else 0.0
    return len(xy) * (2 * r + 1) ** 2 + LINE_WEIGHT * length * (2 * r + 1)


def _thin(points: list[tuple[float, float]], spacing: float) -> list[tuple[float, float]]:
    """``points`` without those closer than ``spacing`` to the last one kept (the first and last stay): a
    brush's dab there adds at most ``spacing`` at the rim of the kept dab's."""
    if len(points) <= 2:
        return points
    out = [points[0]]
    for x, y in points[1:-1]:
        px, py = out[-1]
        if (x - px) ** 2 + (y - py) ** 2 >= spacing * spacing:
            out.append((x, y))
    out.append(points[-1])
    return out


BOX_GROWS = ("a box reaching outside the mask cannot grow the mask by itself: with a model, the box asks it for the "
             "object in the larger box; without one, paint the missing part with the brush (b); nothing was changed")


def _not_empty(mask: crops.Crop, what: str) -> crops.Crop:
    """An edited mask must keep a pixel: an instance with an empty mask would be saved and exported as a
    zero-area annotation. Deleting the instance is the way to remove it."""
    if mask.empty():
        raise UserError(f"{what} would leave the mask empty; to remove the instance, delete it (Delete)")
    return mask


@dataclasses.dataclass
class CategoryInfo:
    id: int
    name: str
    keypoints: list[str]
    skeleton: list[list[int]]


def _infos(rows) -> dict[int, CategoryInfo]:
    return {c.id: CategoryInfo(c.id, c.name, list(c.keypoints or []), list(c.skeleton or [])) for c in rows}


class LabelSession:
    """The labels of one image while a person works on it."""

    clock = staticmethod(time.monotonic)  # what active time is measured with (tests replace it)

    def __init__(self, store: Store, image_id: int, min_score: float = 0.0, history_bytes: int = DEFAULT_BUDGET):
        self.store = store
        self.image_id = image_id
        self.verdicts = 0  # verdicts given from this session: the image's history changed (annotator.canvas)
        self._load(mark_in_review=True)
        self._start_timing()
        self.min_score = min_score  # the view's "hide proposals below" threshold: what "shown" and "next" mean
        self.conflicts = ConflictReview(self)  # this person's changes a save refused, to re-apply or drop
        self.edits = EditHistory(history_bytes)  # undo and redo
        self.lock = threading.RLock()  # one edit at a time, whichever way it came
        self.selected: int | None = None
        self.select_first()
        self.dirty = False

    @property
    def pending(self) -> list[Refused]:
        """This person's changes a save refused, waiting to be re-applied or dropped (``conflicts``)."""
        return self.conflicts.pending

    def reload(self) -> None:
        """Read the image's labels again (the store's now); the caller decides what happens to the edits."""
        self._load()

    def _load(self, mark_in_review: bool = False) -> None:
        """Read the image and its labels. A row that cannot be decoded is left out of the session (and
        untouched in the store) and named in ``broken``, so one bad row never hides the rest."""
        self.read_at = utcnow()  # a save after this moment is one this session has not seen
        got = annotations.load(self.store, self.image_id, opening=mark_in_review)
        im = got.image
        self.width, self.height = im.width, im.height
        self.file_name, self.status, self.row_version = im.file_name, im.status, im.row_version
        self.media_path = im.media_path
        self.categories = _infos(got.categories)
        good, self.broken = [], []
        kept = []
        decoded = crops.decode_crops([a.segmentation for a in got.annotations], self.height, self.width)
        for a, crop in zip(got.annotations, decoded):  # (thousands of masks are decoded together, above)
            if a.category_id not in self.categories:
                problem = f"category {a.category_id} does not exist"
            elif isinstance(crop, mask_codec.MaskError):
                problem = str(crop)
            else:
                kept.append(crop)
                good.append(a)
                continue
            self.broken.append(f"annotation {a.id} cannot be shown ({problem}); it is kept unchanged")
        self.instances = Instances.from_rows(good, self.height, self.width)
        self.instances._crops[:] = kept  # decoded once, above (each costs what its mask covers)
        self.reviewers = {a.id: (a.reviewed_by, a.reviewed_at) for a in good}  # who saved each row as it is

    def refresh_categories(self) -> str | None:
        """Read the categories again: one added, renamed or given keypoints in the Dataset tab shows up here
        (the class lists) without reopening the image. An unsaved keypoint list placed on a category's list
        that has changed since is put on the new list by keypoint name (``_fit_keypoints``); returns what was
        done then, else None."""
        before = self.categories
        self.categories = _infos(cat_db.all_categories(self.store))
        return self._fit_keypoints(before)

    # --- time spent ---------------------------------------------------------------------------------
    def _start_timing(self) -> None:
        self.opened_at = utcnow()
        self._last_action = self.clock()
        self.active_seconds = 0.0  # since opening (or the last save), pauses over IDLE_GAP left out
        self.actions = 0

    def _activity(self, action: bool = True) -> None:
        """Count the time since the previous action as work, unless it was a pause of over IDLE_GAP."""
        now = self.clock()
        gap = now - self._last_action
        if 0 <= gap <= IDLE_GAP:
            self.active_seconds += gap
        self._last_action = now
        self.actions += action

    # --- history ---------------------------------------------------------------------------------
    def record(self, indices: Sequence[int], pending: bool = False) -> None:
        """Before an edit of ``indices`` (and of the refused edits' list, with ``pending``): one undo step."""
        self._activity()
        self.edits.record(self.instances, indices, list(self.pending) if pending else NOTHING)
        self.dirty = True

    def _swap(self, undo: bool) -> bool:
        now = list(self.pending)
        done, before = (self.edits.undo if undo else self.edits.redo)(self.instances, now)
        if not done:
            return False
        if before is not NOTHING:
            self.conflicts.pending = list(before)
        self.dirty = True
        if self.selected is not None and self.selected >= len(self.instances):
            self.selected = None
        return True

    def undo(self) -> bool:
        self._activity()
        return self._swap(undo=True)

    def redo(self) -> bool:
        self._activity()
        return self._swap(undo=False)

    # --- selection ----------------------------------------------------------------------------------
    def visible(self, min_score: float = 0.0) -> list[int]:
        """Indices drawn and listed: not deleted; model proposals (unreviewed or rejected) only at or above
        ``min_score``. Accepted and hand-drawn instances always show."""
        return [i for i, it in enumerate(self.instances) if not it.deleted and
                not (it.source == "model" and it.state != "accepted" and it.score is not None
                     and it.score < min_score)]

    def select(self, index: int | None) -> None:
        if index is not None and not (0 <= index < len(self.instances) and not self.instances[index].deleted):
            raise UserError(f"no instance #{index}")
        self._activity()
        self.selected = index


    def next_unreviewed(self) -> int | None:
        """The shown, unreviewed proposal to look at next: the highest score first (never the selected one
        while others are left)."""
        todo = [i for i in self.visible(self.min_score) if self.instances[i].state == "proposed"]
        todo.sort(key=lambda i: (-(self.instances[i].score or 0.0), i))
        others = [i for i in todo if i != self.selected]
        return (others or todo or [None])[0]

    def select_first(self) -> int | None:
        """Select the shown, unreviewed proposal to look at first (what opening an image does)."""
        self.selected = None
        self.selected = self.next_unreviewed()
        return self.selected

    def unreviewed(self) -> int:
        """How many instances are still proposals nobody accepted or rejected (shown or not)."""
        return sum(1 for it in self.instances if not it.deleted and it.state == "proposed")

    def _need(self, index: int | None) -> int:
        if index is None:
            index = self.selected
            if index is None:
                raise UserError("select an instance first (click it, or pick it in the list)")
        if not (0 <= index < len(self.instances)) or self.instances[index].deleted:
            raise UserError(f"no instance #{index}: select one that is shown (click it, or pick it in the list)")
        return index

    # --- review -------------------------------------------------------------------------------------
    def set_state(self, state: str, index: int | None = None) -> None:
        i = self._need(index)
        self.record([i])
        self.instances[i].state = state

    def accept(self, index: int | None = None) -> None:
        self.set_state("accepted", index)

    def reject(self, index: int | None = None) -> None:
        self.set_state("rejected", index)

    def review(self, state: str, index: int | None = None) -> int | None:
        """Accept or reject one instance, then select the next unreviewed one (the keyboard review: one key
        per instance). Returns the newly selected index (None when none are left)."""
        self.set_state(state, index)
        self.selected = self.next_unreviewed()
        return self.selected

    def reject_rest(self) -> int:
        """Reject every proposal still unreviewed (shown or hidden by the score threshold); one undo step."""
        idx = [i for i, it in enumerate(self.instances) if not it.deleted and it.state == "proposed"]
        if idx:
            self.record(idx)
            for i in idx:
                self.instances[i].state = "rejected"
        if self.selected in idx:  # a rejected instance is hidden: the next key or stroke must not edit it
            self.selected = None
        return len(idx)

    def delete(self, index: int | None = None) -> None:
        i = self._need(index)
        self.record([i])
        self.instances[i].deleted = True
        self.selected = None

    def accept_all_shown(self, min_score: float) -> int:
        idx = [i for i in self.visible(min_score) if self.instances[i].state == "proposed"]
        if idx:
            self.record(idx)
            for i in idx:
                self.instances[i].state = "accepted"
        return len(idx)

    # --- edits --------------------------------------------------------------------------------------
    def _edited(self, i: int) -> Instance:
        it = self.instances[i]
        it.edited = True
        if it.state == "proposed":
            it.state = "accepted"  # correcting a proposal accepts the corrected version
        return it

    def set_class(self, category_id: int, index: int | None = None) -> None:
        if category_id not in self.categories:
            raise UserError(f"no category with id {category_id}")
        i = self._need(index)
        self.record([i])
        it = self._edited(i)
        if self.categories[category_id].keypoints != self.categories[it.category_id].keypoints:
            it.keypoints = None  # keypoints belong to the old category's list
        it.category_id = category_id

    def paint(self, points: Sequence[tuple[float, float]], radius: float, erase: bool = False,
              index: int | None = None) -> None:
        """Brush (or eraser) dabs of ``radius`` pixels along ``points`` on the selected instance's mask."""
        i = self._need(index)
        stroke = self._stroke(points, radius)
        self._apply(i, stroke, erase)

    def _stroke(self, points: Sequence[tuple[float, float]], radius: float) -> crops.Crop:
        """The pixels a brush of ``radius`` covers along ``points``, drawn within the stroke's own box (cut to
        the image): the work and memory are in proportion to the area it touches. Points closer than an
        eighth of the radius to the last one kept are skipped (``_thin``)."""
        r = float(radius)
        if not math.isfinite(r):
            raise UserError(f"brush radius {radius!r} is not a number")
        if r > MAX_BRUSH_RADIUS:
            raise UserError(f"brush radius {r:g} is over the limit of {MAX_BRUSH_RADIUS:g} pixels: draw a polygon "
                            "(g) for a large area")
        r = max(0.5, r)
        pts = _thin(_points(points), r / 8)
        work = stroke_work(pts, r)
        if work > MAX_STROKE_WORK:
            raise UserError(f"that stroke would draw {work / 1e6:.0f} million pixels, over the limit of "
                            f"{MAX_STROKE_WORK / 1e6:.0f} million for one stroke: paint it in parts, or draw a polygon")
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0 = max(0, math.floor(min(xs) - r) - 1), max(0, math.floor(min(ys) - r) - 1)
        x1, y1 = min(self.width, math.ceil(max(xs) + r) + 2), min(self.height, math.ceil(max(ys) + r) + 2)
        if x1 <= x0 or y1 <= y0:
            return crops.EMPTY
        img = PILImage.new("1", (x1 - x0, y1 - y0), 0)
        d = ImageDraw.Draw(img)
        local = [(x - x0, y - y0) for x, y in pts]
        if len(local) > 1:
            d.line(local, fill=1, width=max(1, int(round(2 * r))))
        for x, y in local:
            d.ellipse([x - r, y - r, x + r, y + r], fill=1)
        return crops.tight(crops.Crop(x0, y0, np.asarray(img, dtype=bool)))

    def _apply(self, i: int, region: crops.Crop, erase: bool) -> None:
        m = self.instances[i].crop or crops.EMPTY
        new = _not_empty(crops.minus(m, region) if erase else crops.union(m, region), "erasing")
        if crops.pixels_differing(m, new) == 0:  # (off the image, or all inside already): not an edit
            raise UserError("that changed no pixel of the mask" + (" (it lies outside the image)"
                                                                 if region.empty() else ""))
        self.record([i])
        self._edited(i).crop = new  # encoded to RLE with its tight box when next read

    def polygon(self, vertices: Sequence[tuple[float, float]], subtract: bool = False, index: int | None = None) -> None:
        """Add (or subtract) the polygon to the selected instance's mask."""
        if len(vertices) < 3:
            raise UserError(f"a polygon needs at least 3 points; {len(vertices)} placed")
        i = self._need(index)
        self._apply(i, self._polygon_mask(vertices), subtract)

    def _polygon_mask(self, vertices: Sequence[tuple[float, float]]) -> crops.Crop:
        flat = [v for p in _points(vertices) for v in p]
        try:
            return crops.decode_crop([flat], self.height, self.width)
        except mask_codec.MaskError as e:
            raise UserError(f"polygon refused: {e}") from None

    def set_mask(self, mask: np.ndarray, index: int | None = None) -> None:
        """Replace the mask with a full-frame bool array (kept as its crop)."""
        i = self._need(index)
        if mask.shape != (self.height, self.width):
            raise UserError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {self.width}x{self.height}")
        crop = crops.crop_of(mask)
        self.record([i])
        self._edited(i).crop = crop

    def set_box(self, x0: float, y0: float, x1: float, y1: float, index: int | None = None) -> None:
        """Set the box from two corners; a mask is cut to the new box. A mask cannot grow by itself: a box only
        reaching outside it (a handle dragged outward) is refused, naming what can (annotator.canvas asks the
        model for the larger box)."""
        i = self._need(index)
        (x0, y0), (x1, y1) = _points([(x0, y0), (x1, y1)])
        x0, x1 = sorted((max(0.0, min(x0, self.width)), max(0.0, min(x1, self.width))))
        y0, y1 = sorted((max(0.0, min(y0, self.height)), max(0.0, min(y1, self.height))))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise UserError("the box is empty: click two opposite corners")
        crop = self.instances[i].crop
        if crop is not None:
            cut = _not_empty(crops.within(crop, int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))), "that box")
            if self.box_grows(i, x0, y0, x1, y1) and crops.pixels_differing(crop, cut) == 0:
                raise UserError(BOX_GROWS)  # (only outward: it would change nothing; partly inward cuts there)
            crop = cut
        self.record([i])
        it = self._edited(i)
        if crop is not None:
            it.crop = crop
        else:
            it.bbox = [x0, y0, x1 - x0, y1 - y0]

    def box_grows(self, i: int, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the box (two corners) reaches outside instance ``i``'s box by more than half a pixel: a
        mask cannot follow it there by itself (annotator.canvas asks the model for the larger box)."""
        bx, by, bw, bh = self.instances.bboxes[i]
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        return x0 < bx - 0.5 or y0 < by - 0.5 or x1 > bx + bw + 0.5 or y1 > by + bh + 0.5

    def replace_mask(self, crop: crops.Crop, index: int | None = None) -> None:
        """Put ``crop`` in place of the instance's mask (the class and keypoints stay); one undo step."""
        i = self._need(index)
        crop = _not_empty(crops.clip(crop, self.height, self.width), "that mask")
        self.record([i])
        self._edited(i).crop = crop

    def region(self, crop: crops.Crop, subtract: bool = False, index: int | None = None) -> None:
        """Add (or subtract) a region given as a crop (the magic wand's) to the selected instance's mask; one
        undo step, as a stroke."""
        i = self._need(index)
        self._apply(i, crops.clip(crop, self.height, self.width), subtract)

    def place_keypoints(self, keypoints: Sequence[float], index: int | None = None) -> None:
        """Set all of the instance's keypoints at once (a skeleton laid out in a box): [x, y, v] * K on its
        category's list, each inside the image; one undo step."""
        i = self._need(index)
        cat = self.categories[self.instances[i].category_id]
        if len(keypoints) != 3 * len(cat.keypoints) or not cat.keypoints:
            raise UserError(f"category '{cat.name}' has {len(cat.keypoints)} keypoints, not {len(keypoints) // 3}")
        k = []
        for j in range(len(cat.keypoints)):
            x, y, v = keypoints[3 * j:3 * j + 3]
            if v not in (0, 1, 2):
                raise UserError("visibility is 0 (not labeled), 1 (occluded) or 2 (visible)")
            ((x, y),) = _points([(x, y)])
            x, y = min(max(x, 0.0), float(self.width)), min(max(y, 0.0), float(self.height))
            k += [0, 0, 0] if v == 0 else [round(x, 2), round(y, 2), int(v)]
        self.record([i])
        self._edited(i).keypoints = k

    def box_from_mask(self, index: int | None = None) -> None:
        i = self._need(index)
        it = self.instances[i]
        if it.crop is None or it.crop.empty():
            raise UserError("this instance has no mask to take the box from")
        self.record([i])
        self._edited(i).bbox = self.instances.tight_bbox(i)

    def set_keypoint(self, name: str, x: float, y: float, visibility: int = 2, index: int | None = None) -> None:
        """Place a keypoint of the selected instance (it stays on that instance's annotation)."""
        i = self._need(index)
        cat = self.categories[self.instances[i].category_id]
        if name not in cat.keypoints:
            raise UserError(f"category '{cat.name}' has no keypoint '{name}'"
                            + (f"; it has {', '.join(cat.keypoints)}" if cat.keypoints else ""))
        if visibility not in (0, 1, 2):
            raise UserError("visibility is 0 (not labeled), 1 (occluded) or 2 (visible)")
        ((x, y),) = _points([(x, y)])
        if not (-0.5 <= x <= self.width + 0.5 and -0.5 <= y <= self.height + 0.5):
            raise UserError(f"({x:g}, {y:g}) is outside the {self.width}x{self.height} image")
        self.record([i])
        it = self._edited(i)
        fits = it.keypoints and len(it.keypoints) == 3 * len(cat.keypoints)  # (a row stored before lists were checked)
        k = list(it.keypoints) if fits else [0.0] * (3 * len(cat.keypoints))
        j = cat.keypoints.index(name)
        k[3 * j:3 * j + 3] = [0, 0, 0] if visibility == 0 else [round(float(x), 2), round(float(y), 2), visibility]
        it.keypoints = k


    def add_found(self, found: Instances) -> int:
        """Add the single instance ``found`` (e.g. what box assist saw) as a new instance, selected and
        ready to accept or edit; undo removes it."""
        if len(found) != 1 or (found.height, found.width) != (self.height, self.width):
            raise UserError("expected one instance of this image")
        if found.category_ids[0] not in self.categories:
            raise UserError(f"no category with id {found.category_ids[0]}")
        i = len(self.instances)
        self.record([i])
        self.instances.append(found)
        self.instances.ann_ids[i], self.instances.edited[i], self.instances.loaded_states[i] = None, True, None
        self.selected = i
        return i

    def replace_found(self, index: int, found: Instances) -> None:
        """Put ``found`` (assist's answer for a moved box) in place of instance ``index``; one undo step."""
        i = self._need(index)
        if len(found) != 1 or (found.height, found.width) != (self.height, self.width):
            raise UserError("expected one instance of this image")
        self.record([i])
        ann_id, loaded = self.instances.ann_ids[i], self.instances.loaded_states[i]
        self.instances.put(i, found)
        self.instances.ann_ids[i], self.instances.loaded_states[i], self.instances.edited[i] = ann_id, loaded, True

    def move_vertex(self, part: int, vertex: int, x: float, y: float, index: int | None = None) -> None:
        """Move one vertex of a polygon annotation; it stays a polygon (COCO polygons, not RLE)."""
        i = self._need(index)
        seg = self.instances.segmentations[i]
        if not isinstance(seg, list) or not seg:
            raise UserError("this instance's mask is not a polygon: edit it with the brush or eraser")
        if not (isinstance(part, int) and isinstance(vertex, int) and 0 <= part < len(seg)
                and 0 <= vertex < len(seg[part]) // 2):
            raise UserError(f"the polygon has no vertex {vertex} in part {part}")
        ((x, y),) = _points([(x, y)])
        x, y = min(max(x, 0.0), float(self.width)), min(max(y, 0.0), float(self.height))
        polygons = [list(p) for p in seg]
        polygons[part][2 * vertex:2 * vertex + 2] = [round(x, 2), round(y, 2)]
        try:
            mask_codec.check(polygons, self.height, self.width)
            _not_empty(crops.decode_crop(polygons, self.height, self.width), "moving that vertex")
        except mask_codec.MaskError as e:
            raise UserError(f"polygon refused: {e}") from None
        self.record([i])
        self._edited(i)
        self.instances.set_polygons(i, polygons)

    def new_instance(self, category_id: int, *, polygon: Sequence[tuple[float, float]] | None = None,
                     mask: np.ndarray | None = None, stroke: tuple[Sequence[tuple[float, float]], float] | None = None,
                     region: crops.Crop | None = None) -> int:
        """Draw a new instance (polygon, brush stroke, a region's crop or mask) of a category; it is selected.
        A polygon stays the instance's polygon (its vertices can be moved: ``move_vertex``)."""
        if category_id not in self.categories:
            raise UserError("choose the new instance's class first")
        outline = None
        if polygon is not None:
            if len(polygon) < 3:
                raise UserError(f"a polygon needs at least 3 points; {len(polygon)} placed")
            outline = [[round(min(max(v, 0.0), float(self.width if k % 2 == 0 else self.height)), 2)
                        for p in _points(polygon) for k, v in enumerate(p)]]  # (its vertices, inside the image)
            m = self._polygon_mask(polygon)
        elif region is not None:
            m = crops.tight(crops.clip(region, self.height, self.width))
        elif stroke is not None:
            m = self._stroke(*stroke)
        elif mask is not None:
            if mask.shape != (self.height, self.width):
                raise UserError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {self.width}x{self.height}")
            m = crops.crop_of(mask)
        else:
            raise UserError("draw the new instance first (polygon points or a brush stroke)")
        if m.empty():
            raise UserError("the drawn shape covers no pixels")
        i = len(self.instances)
        self.record([i])
        self.instances.add(category_id, [0, 0, 0, 0], source="human", state="accepted")
        self.instances.set_crop(i, m)
        if outline is not None:
            try:
                mask_codec.check(outline, self.height, self.width)
                if not crops.decode_crop(outline, self.height, self.width).empty():
                    self.instances.set_polygons(i, outline)  # (else the mask drawn above stays, as RLE)
            except mask_codec.MaskError:
                pass
        self.instances[i].edited = True
        self.selected = i
        return i

    # --- save ---------------------------------------------------------------------------------------
    def save(self, user: str) -> int:
        """Write all labels of the image in one transaction. A proposal nobody accepted or rejected stays a
        proposal: the image is then left in review, else it is done. Returns how many are unreviewed.
        Refused (SaveConflict) if the image changed in the store since it was opened, or a row this session
        holds is gone; nothing is then written and the session keeps every edit (``review_conflict`` lists them
        next to the current labels). Refused too (UserError) while refused edits wait to be re-applied or
        dropped, so none is left behind unseen."""
        if self.pending:
            raise UserError(f"{len(self.pending)} of your refused edits still wait: re-apply or drop each (or all) "
                            "in 'Your refused edits', then save; nothing was written")
        left = self.unreviewed()
        status = "in_review" if left else "done"
        self._activity(action=False)
        review = dict(review_summary(self.instances), user=user, opened_at=self.opened_at, saved_at=utcnow(),
                      active_seconds=round(self.active_seconds, 3), actions=self.actions)
        try:
            annotations.save_review(self.store, self.image_id, self.row_version, self.instances, user, status=status,
                                    review=review)
        except annotations.KeypointsDoNotFit as e:
            done = self.refresh_categories()
            raise UserError(f"{e}. " + (f"{done[0].upper() + done[1:]}; look them over and save again" if done else
                                        "Place that instance's keypoints again (a new list is started on the "
                                        "category's list as it is now), then save")) from None
        self._start_timing()
        for k, st in enumerate(self.instances.states):
            if not self.instances.deleted[k]:
                self.instances.loaded_states[k] = st
                self.instances.edited[k] = False
        self.row_version += 1
        self.read_at = utcnow()
        self.status = status
        self.conflicts.theirs = None
        self.dirty = False
        self.edits.clear()
        return left

    def _fit_keypoints(self, before: dict[int, CategoryInfo]) -> str | None:
        """Each instance whose keypoint list fits its category's list in ``before`` but not the one read now:
        its keypoints put on the new list by name (marked edited, so the save writes them), those whose names
        are gone dropped. Returns what was done, for the person to check, or None when nothing was."""
        moved = dropped = fixed = 0
        for it in self.instances:
            now, then = self.categories.get(it.category_id), before.get(it.category_id)
            old = it.keypoints
            if (it.deleted or old is None or now is None or then is None or len(old) == 3 * len(now.keypoints)
                    or len(old) != 3 * len(then.keypoints)):
                continue
            k = [0] * (3 * len(now.keypoints))
            for j, name in enumerate(then.keypoints):
                if old[3 * j + 2] > 0 and name in now.keypoints:
                    t = now.keypoints.index(name)
                    k[3 * t:3 * t + 3] = old[3 * j:3 * j + 3]
                    moved += 1
                elif old[3 * j + 2] > 0:
                    dropped += 1
            it.keypoints, it.edited = k, True
            fixed += 1
        if not fixed:
            return None
        self.dirty = True
        return (f"a category's keypoint list was changed: the unsaved keypoints of {fixed} instance(s) were put on "
                f"the new list by name ({moved} kept, {dropped} dropped since their names are no longer listed)")

    def discard(self) -> None:
        """Forget every unsaved edit: the image's labels as the store has them now."""
        self._load()
        self.conflicts.clear()
        self.select_first()
        self.edits.clear()
        self.dirty = False

    def give_verdict(self, verdict: str, user: str, role: str, note: str = "") -> str:
        """A reviewer (``user`` with ``role``) approves the image's labels as saved, or sends them back with a
        note (db.annotations.give_verdict); refused for a role below reviewer, with unsaved edits, or on one's
        own save."""
        users.require(role, "review", user)
        if self.dirty:
            raise UserError("save or discard your edits first: a verdict is on the labels as saved")
        annotations.give_verdict(self.store, self.image_id, self.row_version, verdict, user, note)
        claims.release(self.store, user, [self.image_id])  # judged: the reviewer is done with it
        self.verdicts += 1  # the page reads the history again
        if verdict == "sent_back":
            self.status = "in_review"
            return f"image {self.image_id} sent back to the labeling queue with your note"
        return f"image {self.image_id} approved"


def review_summary(instances: Instances) -> dict[str, Any]:
    """What a save does to the proposals in ``instances`` (since they were read from the store): how many
    were reviewed (accepted unchanged or edited, rejected or deleted), the mask IoU and keypoints moved from
    each accepted proposal as made to the label as saved, and the instances added (drawn from nothing or
    by assist); ``model_version_id`` is the version most of the image's proposals (and assist answers) came
    from, None when there were none."""
    out: dict[str, Any] = dict(proposals=0, accepted_unchanged=0, accepted_edited=0, rejected=0, drawn=0,
                               assisted=0, keypoints_moved=0, iou_sum=0.0, iou_count=0)
    versions = collections.Counter(v for v, src in zip(instances.model_version_ids, instances.sources)
                                   if src in ("model", "assist") and v is not None)
    for i in range(len(instances)):
        if instances.ann_ids[i] is None:
            if not instances.deleted[i]:
                out["assisted" if instances.sources[i] == "assist" else "drawn"] += 1
            continue
        state = "rejected" if instances.deleted[i] else instances.states[i]
        if instances.sources[i] != "model" or instances.loaded_states[i] != "proposed" or state == "proposed":
            continue
        out["proposals"] += 1
        if state == "rejected":
            out["rejected"] += 1
            continue
        orig = instances.originals[i]
        if not orig:  # a proposal imported from a COCO file keeps no copy: as loaded is as made
            out["accepted_edited" if instances.edited[i] else "accepted_unchanged"] += 1
            continue
        seg, kp, cat = instances.segmentations[i], instances.keypoints[i], instances.category_ids[i]
        same = (orig.get("segmentation") == seg and orig.get("category_id", cat) == cat
                and (orig.get("keypoints") or None) == (kp or None))
        out["accepted_unchanged" if same else "accepted_edited"] += 1
        if orig.get("segmentation") and seg:
            out["iou_count"] += 1
            out["iou_sum"] += 1.0 if orig["segmentation"] == seg else crops.crop_iou(
                crops.decode_crop(orig["segmentation"], instances.height, instances.width), instances.crop(i))
        out["keypoints_moved"] += compare.keypoints_moved(orig.get("keypoints"), kp)
    out["model_version_id"] = versions.most_common(1)[0][0] if versions else None
    return out
