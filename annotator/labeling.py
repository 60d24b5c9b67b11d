"""Labeling logic for one image, without a browser: review state, edits, undo/redo, save with optimistic
locking. The Gradio callbacks call these methods; so do the tests and bench/ui.py.

Coordinates are full-resolution image pixels; masks are kept at full resolution. Boxes are COCO xywh.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Any, Sequence

import numpy as np
from PIL import Image as PILImage, ImageDraw
from db import annotations
from db import categories as cat_db
from db import compare
from db import masks as mask_codec
from db import users
from db.annotations import SaveConflict
from db.errors import UserError
from db.media import load_rgb
from db.instances import Instance, Instances
from db.schema import utcnow
from db.store import Store

__all__ = ["LabelSession", "CategoryInfo", "SaveConflict", "review_summary"]

IDLE_GAP = 60.0  # seconds: a longer pause between two actions is not counted as time spent labeling


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


def _not_empty(mask: np.ndarray, what: str) -> np.ndarray:
    """An edited mask must keep a pixel: an instance with an empty mask would be saved and exported as a
    zero-area annotation. Deleting the instance is the way to remove it."""
    if not mask.any():
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

    def __init__(self, store: Store, image_id: int):
        self.store = store
        self.image_id = image_id
        self._load(mark_in_review=True)
        self._start_timing()
        self.min_score = 0.0  # the view's "hide proposals below" threshold: what "shown" and "next" mean
        self.seq = 0  # the last canvas message applied (annotator.canvas)
        self.rev = 0  # how many answers the canvas was sent: it ignores one older than what it shows
        self.token = ""  # the page's secret for its canvas's direct edit calls (annotator.ui)
        self.user = store.settings.user  # who saves (annotator.ui sets the page's login)
        self.role = "admin"  # what they may do (db.users); annotator.ui sets the login's role
        self.history: list[int] = []  # the images this page opened before this one (annotator.ui)
        self.lock = threading.RLock()  # one edit at a time, whichever way it came
        self.selected: int | None = None
        self.select_first()
        self._undo: list[list[tuple[int, Instances | None]]] = []  # (index, that instance before) per edit
        self._redo: list[list[tuple[int, Instances | None]]] = []
        self.dirty = False
        self._pixels: np.ndarray | None = None
        self.display_cache: dict = {}  # annotator.view's scaled picture and mask crops, per session

    def _load(self, mark_in_review: bool = False) -> None:
        """Read the image and its labels. A row that cannot be decoded is left out of the session (and
        untouched in the store) and named in ``broken``, so one bad row never hides the rest."""
        got = annotations.load(self.store, self.image_id, opening=mark_in_review)
        im = got.image
        self.width, self.height = im.width, im.height
        self.file_name, self.status, self.row_version = im.file_name, im.status, im.row_version
        self.media_path = im.media_path
        self.categories = _infos(got.categories)
        good, self.broken = [], []
        masks = []
        for a in got.annotations:
            try:
                if a.category_id not in self.categories:
                    raise KeyError(f"category {a.category_id} does not exist")
                masks.append(mask_codec.decode(a.segmentation, self.height, self.width) if a.segmentation else None)
                good.append(a)
            except (ValueError, TypeError, KeyError, IndexError) as e:
                self.broken.append(f"annotation {a.id} cannot be shown ({e}); it is kept unchanged")
        self.instances = Instances.from_rows(good, self.height, self.width)
        self.instances._masks[:] = masks  # decoded once, above

    def refresh_categories(self) -> None:
        """Read the categories again: one added, renamed or given keypoints in the Dataset tab shows up here
        (the class lists) without reopening the image."""
        self.categories = _infos(cat_db.all_categories(self.store))

    def rebase(self) -> str:
        """After a SaveConflict: read the image's current labels and put this person's changes back on
        top of them: what they drew, edited, reviewed or deleted is kept as theirs (an instance whose row
        is gone, e.g. a proposal made again, comes back as a new instance); the rest is the store's
        current state. Nothing is written; the session stays unsaved. Returns a summary for the person."""
        old = self.instances
        mine = [i for i, it in enumerate(old) if it.touched]
        self._load()
        current = {it.ann_id: k for k, it in enumerate(self.instances)}
        kept = revived = 0
        dropped = []
        for i in mine:
            it = old[i]
            if it.category_id not in self.categories and not it.deleted:
                dropped.append(f"#{i}")  # its class was deleted meanwhile: it cannot be saved as it is
                continue
            if it.ann_id is not None and it.ann_id in current:
                k = current[it.ann_id]
                theirs_state = self.instances[k].state
                self.instances.put(k, old.take([i]))  # this person's version of the whole instance
                self.instances[k].loaded_state, self.instances[k].edited = theirs_state, True
                kept += 1
            elif not it.deleted:  # drawn here, or its row is gone: it comes back as a new instance
                self.instances.append(old.take([i]))
                new = self.instances[len(self.instances) - 1]
                new.ann_id, new.loaded_state, new.edited = None, None, True
                if new.source == "model" and new.state == "proposed":
                    new.state = "accepted"
                revived += 1
        self.selected = None
        self._undo.clear()
        self._redo.clear()
        self.display_cache.clear()
        self.dirty = True
        lost = (f" Instance(s) {', '.join(dropped)} could not be kept: their class was deleted meanwhile."
                if dropped else "")
        return (f"image {self.image_id} changed in the store since you opened it (saved from another browser, "
                f"proposed again, or a category changed); nothing was written. Your {kept + revived} change(s) "
                f"are kept on top of the current labels ({revived} of them as new instances because their rows "
                f"are gone): check them and save again.{lost}")

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.asarray(load_rgb(self.store.media_file(self.media_path)))
        return self._pixels

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

    # --- history ------------------------------------------------------------------------------------
    def _snapshot(self, i: int) -> Instances | None:
        return self.instances.take([i]) if i < len(self.instances) else None

    def _record(self, indices: Sequence[int]) -> None:
        self._activity()
        self._undo.append([(i, self._snapshot(i)) for i in indices])
        self._redo.clear()
        self.dirty = True

    def _swap(self, src: list, dst: list) -> bool:
        if not src:
            return False
        entry = src.pop()
        back = []
        for i, before in entry:
            back.append((i, self._snapshot(i)))
            if before is None:  # the edit created instance i
                self.instances.remove(i)
            elif i < len(self.instances):
                self.instances.put(i, before)
            else:
                self.instances.append(before)
        dst.append(back)
        self.dirty = True
        if self.selected is not None and self.selected >= len(self.instances):
            self.selected = None
        return True

    def undo(self) -> bool:
        self._activity()
        return self._swap(self._undo, self._redo)

    def redo(self) -> bool:
        self._activity()
        return self._swap(self._redo, self._undo)

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

    def select_at(self, x: float, y: float, min_score: float = 0.0) -> int | None:
        """The smallest visible instance whose mask (or box, without a mask) holds the point."""
        ((x, y),) = _points([(x, y)])
        self._activity()
        xi, yi = int(x), int(y)
        hits = []
        for i in self.visible(min_score):
            it = self.instances[i]
            if it.state == "rejected":
                continue
            if it.mask is not None and 0 <= yi < self.height and 0 <= xi < self.width:
                inside = bool(it.mask[yi, xi])
            else:
                bx, by, bw, bh = it.bbox
                inside = bx <= x <= bx + bw and by <= y <= by + bh
            if inside:
                hits.append((it.area, i))
        self.selected = min(hits)[1] if hits else None
        return self.selected

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
        index = self.selected if index is None else index
        if index is None or not (0 <= index < len(self.instances)) or self.instances[index].deleted:
            raise UserError("select an instance first (click it, or pick it in the list)")
        return index

    # --- review -------------------------------------------------------------------------------------
    def set_state(self, state: str, index: int | None = None) -> None:
        i = self._need(index)
        self._record([i])
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
            self._record(idx)
            for i in idx:
                self.instances[i].state = "rejected"
        return len(idx)

    def delete(self, index: int | None = None) -> None:
        i = self._need(index)
        self._record([i])
        self.instances[i].deleted = True
        self.selected = None

    def accept_all_shown(self, min_score: float) -> int:
        idx = [i for i in self.visible(min_score) if self.instances[i].state == "proposed"]
        if idx:
            self._record(idx)
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
        self._record([i])
        it = self._edited(i)
        if self.categories[category_id].keypoints != self.categories[it.category_id].keypoints:
            it.keypoints = None  # keypoints belong to the old category's list
        it.category_id = category_id

    def _disk(self, x: float, y: float, radius: float) -> np.ndarray:
        yy, xx = np.ogrid[:self.height, :self.width]
        return (xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2

    def paint(self, points: Sequence[tuple[float, float]], radius: float, erase: bool = False,
              index: int | None = None) -> None:
        """Brush (or eraser) dabs of ``radius`` pixels along ``points`` on the selected instance's mask."""
        i = self._need(index)
        stroke = self._stroke(points, radius)
        self._apply(i, stroke, erase)

    def _stroke(self, points: Sequence[tuple[float, float]], radius: float) -> np.ndarray:
        img = PILImage.new("1", (self.width, self.height), 0)
        d = ImageDraw.Draw(img)
        r = float(radius)
        if not math.isfinite(r):
            raise UserError(f"brush radius {radius!r} is not a number")
        r = min(max(0.5, r), float(max(self.width, self.height)))
        pts = [(min(max(x, -r), self.width + r), min(max(y, -r), self.height + r)) for x, y in _points(points)]
        if len(pts) > 1:
            d.line(pts, fill=1, width=max(1, int(round(2 * r))))
        for x, y in pts:
            d.ellipse([x - r, y - r, x + r, y + r], fill=1)
        return np.asarray(img, dtype=bool)

    def _apply(self, i: int, region: np.ndarray, erase: bool) -> None:
        m = self.instances[i].mask
        m = m if m is not None else np.zeros((self.height, self.width), bool)
        new = _not_empty((m & ~region) if erase else (m | region), "erasing")
        self._record([i])
        self._edited(i).mask = new  # stored as RLE with its tight box

    def polygon(self, vertices: Sequence[tuple[float, float]], subtract: bool = False, index: int | None = None) -> None:
        """Add (or subtract) the polygon to the selected instance's mask."""
        if len(vertices) < 3:
            raise UserError(f"a polygon needs at least 3 points; {len(vertices)} placed")
        i = self._need(index)
        self._apply(i, self._polygon_mask(vertices), subtract)

    def _polygon_mask(self, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
        flat = [v for p in _points(vertices) for v in p]
        try:
            return mask_codec.decode([flat], self.height, self.width)
        except mask_codec.MaskError as e:
            raise UserError(f"polygon refused: {e}") from None

    def set_mask(self, mask: np.ndarray, index: int | None = None) -> None:
        """Replace the mask (e.g. from the paint canvas, resized to full resolution)."""
        i = self._need(index)
        if mask.shape != (self.height, self.width):
            raise UserError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {self.width}x{self.height}")
        self._record([i])
        it = self._edited(i)
        it.mask = mask.astype(bool)

    def set_box(self, x0: float, y0: float, x1: float, y1: float, index: int | None = None) -> None:
        """Set the box from two corners; a mask is cut to the new box."""
        i = self._need(index)
        (x0, y0), (x1, y1) = _points([(x0, y0), (x1, y1)])
        x0, x1 = sorted((max(0.0, min(x0, self.width)), max(0.0, min(x1, self.width))))
        y0, y1 = sorted((max(0.0, min(y0, self.height)), max(0.0, min(y1, self.height))))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise UserError("the box is empty: click two opposite corners")
        mask = self.instances[i].mask
        if mask is not None:
            keep = np.zeros_like(mask)
            keep[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
            mask = _not_empty(mask & keep, "that box")
        self._record([i])
        it = self._edited(i)
        if mask is not None:
            it.mask = mask
        else:
            it.bbox = [x0, y0, x1 - x0, y1 - y0]

    def box_from_mask(self, index: int | None = None) -> None:
        i = self._need(index)
        it = self.instances[i]
        if it.mask is None or not it.mask.any():
            raise UserError("this instance has no mask to take the box from")
        self._record([i])
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
        self._record([i])
        it = self._edited(i)
        k = list(it.keypoints) if it.keypoints else [0.0] * (3 * len(cat.keypoints))
        j = cat.keypoints.index(name)
        k[3 * j:3 * j + 3] = [0, 0, 0] if visibility == 0 else [round(float(x), 2), round(float(y), 2), visibility]
        it.keypoints = k

    def set_keypoint_visibility(self, name: str, visibility: int, index: int | None = None) -> None:
        i = self._need(index)
        it = self.instances[i]
        cat = self.categories[it.category_id]
        j = cat.keypoints.index(name) if name in cat.keypoints else None
        if j is None or not it.keypoints or (it.keypoints[3 * j + 2] == 0 and visibility != 0):
            raise UserError(f"place keypoint '{name}' first")
        x, y = it.keypoints[3 * j], it.keypoints[3 * j + 1]
        self.set_keypoint(name, x, y, visibility, i)

    def add_found(self, found: Instances) -> int:
        """Add the single instance ``found`` (e.g. what box assist saw) as a new instance, selected and
        ready to accept or edit; undo removes it."""
        if len(found) != 1 or (found.height, found.width) != (self.height, self.width):
            raise UserError("expected one instance of this image")
        if found.category_ids[0] not in self.categories:
            raise UserError(f"no category with id {found.category_ids[0]}")
        i = len(self.instances)
        self._record([i])
        self.instances.append(found)
        self.instances.ann_ids[i], self.instances.edited[i], self.instances.loaded_states[i] = None, True, None
        self.selected = i
        return i

    def replace_found(self, index: int, found: Instances) -> None:
        """Put ``found`` (assist's answer for a moved box) in place of instance ``index``; one undo step."""
        i = self._need(index)
        if len(found) != 1 or (found.height, found.width) != (self.height, self.width):
            raise UserError("expected one instance of this image")
        self._record([i])
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
            _not_empty(mask_codec.decode(polygons, self.height, self.width), "moving that vertex")
        except mask_codec.MaskError as e:
            raise UserError(f"polygon refused: {e}") from None
        self._record([i])
        self._edited(i)
        self.instances.set_polygons(i, polygons)

    def new_instance(self, category_id: int, *, polygon: Sequence[tuple[float, float]] | None = None,
                     mask: np.ndarray | None = None, stroke: tuple[Sequence[tuple[float, float]], float] | None = None) -> int:
        """Draw a new instance (polygon, brush stroke or mask) of a category; it is selected."""
        if category_id not in self.categories:
            raise UserError("choose the new instance's class first")
        if polygon is not None:
            if len(polygon) < 3:
                raise UserError(f"a polygon needs at least 3 points; {len(polygon)} placed")
            m = self._polygon_mask(polygon)
        elif stroke is not None:
            m = self._stroke(*stroke)
        elif mask is not None:
            m = mask.astype(bool)
        else:
            raise UserError("draw the new instance first (polygon points or a brush stroke)")
        if not m.any():
            raise UserError("the drawn shape covers no pixels")
        i = len(self.instances)
        self._record([i])
        self.instances.add(category_id, [0, 0, 0, 0], mask=m, source="human", state="accepted")
        self.instances[i].edited = True
        self.selected = i
        return i

    # --- save ---------------------------------------------------------------------------------------
    def save(self, user: str) -> int:
        """Write all labels of the image in one transaction. A proposal nobody accepted or rejected stays a
        proposal: the image is then left in review, else it is done. Returns how many are unreviewed.
        Refused (SaveConflict) if the image changed in the store since it was opened, or a row this session
        holds is gone; nothing is then written and the session keeps every edit (``rebase`` puts them on top
        of the current labels)."""
        left = self.unreviewed()
        status = "in_review" if left else "done"
        self._activity(action=False)
        review = dict(review_summary(self.instances), user=user, opened_at=self.opened_at, saved_at=utcnow(),
                      active_seconds=round(self.active_seconds, 3), actions=self.actions)
        annotations.save_review(self.store, self.image_id, self.row_version, self.instances, user, status=status,
                                review=review)
        self._start_timing()
        for k, st in enumerate(self.instances.states):
            if not self.instances.deleted[k]:
                self.instances.loaded_states[k] = st
                self.instances.edited[k] = False
        self.row_version += 1
        self.status = status
        self.dirty = False
        self._undo.clear()
        self._redo.clear()
        return left

    def discard(self) -> None:
        """Forget every unsaved edit: the image's labels as the store has them now."""
        self._load()
        self.select_first()
        self._undo.clear()
        self._redo.clear()
        self.display_cache.clear()
        self.dirty = False

    def give_verdict(self, verdict: str, note: str = "") -> str:
        """A reviewer approves the image's labels as saved, or sends them back with a note (db.annotations
        .give_verdict); refused for a role below reviewer, with unsaved edits, or on one's own save."""
        users.require(self.role, "review", self.user)
        if self.dirty:
            raise UserError("save or discard your edits first: a verdict is on the labels as saved")
        annotations.give_verdict(self.store, self.image_id, self.row_version, verdict, self.user, note)
        self.display_cache.pop("history", None)  # read again for the next answer
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
            out["iou_sum"] += 1.0 if orig["segmentation"] == seg else mask_codec.iou(
                mask_codec.decode(orig["segmentation"], instances.height, instances.width), instances.mask(i))
        out["keypoints_moved"] += compare.keypoints_moved(orig.get("keypoints"), kp)
    out["model_version_id"] = versions.most_common(1)[0][0] if versions else None
    return out
