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

__all__ = ["LabelSession", "CategoryInfo", "Refused", "SaveConflict", "review_summary"]

IDLE_GAP = 60.0  # seconds: a longer pause between two actions is not counted as time spent labeling
PENDING = -1  # in an undo entry: the list of refused edits as it was (not an instance index)
KIND_NAMES = {"edited": "edit", "reviewed": "review", "drawn": "drawn instance", "assisted": "assist instance",
              "deleted": "deletion"}  # a Refused item's kind, as said to the person


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


@dataclasses.dataclass(frozen=True, eq=False)
class Refused:
    """One change of this person's that a save refused because someone else saved the image first, kept for
    them to re-apply or drop (``LabelSession.review_conflict``). ``mine`` is their version of the instance (one
    instance, copied; for a deletion, the instance as they last saw it); ``ann_id`` the row it changes, None
    for an instance they drew or added by assist."""

    key: int  # stable within the session: what the canvas's reapply and drop_mine messages name
    kind: str  # "edited", "reviewed" (accepted or rejected, unchanged), "drawn", "assisted" or "deleted"
    ann_id: int | None
    mine: Instances
    category_name: str  # the class's name when the save was refused (to name it should it be deleted)


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
        self.pending: list[Refused] = []  # this person's changes a save refused, to re-apply or drop
        self.theirs: tuple[str, Any] | None = None  # after a conflict: who saved the labels shown, and when
        self._keys = 0  # the last Refused.key given
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
        self.read_at = utcnow()  # a save after this moment is one this session has not seen
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
        self.reviewers = {a.id: (a.reviewed_by, a.reviewed_at) for a in good}  # who saved each row as it is

    def refresh_categories(self) -> None:
        """Read the categories again: one added, renamed or given keypoints in the Dataset tab shows up here
        (the class lists) without reopening the image."""
        self.categories = _infos(cat_db.all_categories(self.store))

    # --- two browsers on one image: a refused save's changes, kept for review -------------------------
    def review_conflict(self) -> str:
        """After a SaveConflict: show the image's labels as the store has them now (what the other person
        saved, or the proposals made again) and keep each of this person's changes as a ``Refused`` item in
        ``pending``, to re-apply or drop one by one (a change the same as theirs is not listed). Nothing is
        written, and the image stays unsaved while items are pending. Returns what to tell the person."""
        old, old_cats, since = self.instances, self.categories, self.read_at
        mine = [i for i, it in enumerate(old) if it.touched]
        self._load()
        current = {a: k for k, a in enumerate(self.instances.ann_ids)}
        found, same = [], 0
        for i in mine:
            it = old[i]
            k = current.get(it.ann_id) if it.ann_id is not None else None
            if it.deleted and k is None:
                continue  # drawn and deleted again, or deleted by both
            if k is not None and not it.deleted and it.state == self.instances.states[k] \
                    and old.row_values(i) == self.instances.row_values(k):
                same += 1
                continue
            kind = ("deleted" if it.deleted else ("assisted" if it.source == "assist" else "drawn")
                    if it.ann_id is None else "edited" if it.edited else "reviewed")
            info = old_cats.get(it.category_id)
            self._keys += 1
            found.append(Refused(self._keys, kind, it.ann_id, old.take([i]),
                                 info.name if info else str(it.category_id)))
        self.pending = self.pending + found  # (items not decided yet stay listed)
        self.theirs = annotations.last_save(self.store, self.image_id, after=since)
        self.selected = None
        self._undo.clear()
        self._redo.clear()
        self.display_cache.clear()
        self.dirty = bool(self.pending)
        how = (f"{self.theirs[0] or 'someone'} saved it" if self.theirs
               else "saved from another browser, proposed again, or a category changed")
        said = [f"image {self.image_id} changed in the store since you opened it ({how}); nothing of yours was "
                "written. The picture shows the labels as saved now."]
        if self.pending:
            said.append(f"Your {len(self.pending)} refused edit(s) are kept under 'Your refused edits': re-apply "
                        "or drop each (or all), then save.")
        else:
            said.append("Your changes were the same as theirs: nothing is left to save.")
        if same and self.pending:
            said.append(f"({same} of your changes were the same as theirs.)")
        blocked = [b for b in map(self.blocked, found) if b]
        if blocked:
            said.append("Not re-appliable: " + "; ".join(blocked) + ".")
        return " ".join(said)

    def blocked(self, r: Refused) -> str:
        """Why refused item ``r`` cannot be re-applied (its class was deleted meanwhile), or ""."""
        cid = r.mine.category_ids[0]
        if r.kind == "deleted" or cid in self.categories:
            return ""
        return f"#{r.key}'s class '{r.category_name}' (id {cid}) was deleted meanwhile: drop it"

    def current_index(self, r: Refused) -> int | None:
        """The index of the instance ``r`` changes in the labels shown now; None when its row is gone (or it
        was drawn here)."""
        if r.ann_id is None:
            return None
        return next((k for k, a in enumerate(self.instances.ann_ids) if a == r.ann_id), None)

    def _refused(self, key: int) -> int:
        for n, r in enumerate(self.pending):
            if r.key == key:
                return n
        left = ", ".join(f"#{r.key}" for r in self.pending)
        raise UserError(f"no refused edit #{key}" + (f"; the list holds {left}" if left else ": none are left"))

    def _restore(self, r: Refused, j: int | None) -> None:
        """Put refused item ``r`` into the labels at ``j`` (from ``_targets``): over the other person's version
        of it, or as a new instance at the end when its row is gone; a deletion deletes ``j``."""
        inst = self.instances
        if r.kind == "deleted":
            if j is not None:
                inst.deleted[j] = True
            return
        if j >= len(inst):
            inst.append(r.mine)
            j = len(inst) - 1
            inst.ann_ids[j], inst.loaded_states[j] = None, None
            if inst.sources[j] == "model" and inst.states[j] == "proposed":
                inst.states[j] = "accepted"
        else:
            loaded = inst.loaded_states[j]  # the state as stored now: what the save's review counts from
            inst.put(j, r.mine)
            inst.loaded_states[j] = loaded
        inst.edited[j] = True

    def _targets(self, items: Sequence[Refused]) -> list[int | None]:
        """Where each item goes: its row's instance, a new index for one whose row is gone, None for a
        deletion of a row that is gone."""
        out, new = [], len(self.instances)
        for r in items:
            j = self.current_index(r)
            if j is None and r.kind != "deleted":
                j, new = new, new + 1
            out.append(j)
        return out

    def reapply(self, key: int) -> str:
        """Re-apply refused item ``key``: it replaces the other person's version of that instance (is added as
        new when its row is gone; a deletion deletes). One undo step, which lists the item again."""
        n = self._refused(key)
        r = self.pending[n]
        why = self.blocked(r)
        if why:
            raise UserError(f"cannot re-apply: {why}")
        (j,) = self._targets([r])
        self._record([j] if j is not None else [], pending=True)
        self._restore(r, j)
        del self.pending[n]
        if j is not None and r.kind != "deleted":
            self.selected = j
        elif self.selected is not None and self.instances[self.selected].deleted:
            self.selected = None
        where = f" as #{j}" if j is not None and r.kind != "deleted" else ""
        return f"re-applied your {KIND_NAMES[r.kind]} #{r.key}{where}" + self._left()

    def reapply_all(self) -> str:
        """Re-apply every refused item that can be (not those whose class was deleted); one undo step."""
        ready = [r for r in self.pending if not self.blocked(r)]
        if not ready:
            raise UserError("no refused edit to re-apply" + (": " + "; ".join(map(self.blocked, self.pending))
                                                             if self.pending else ""))
        targets = self._targets(ready)
        self._record([j for j in targets if j is not None], pending=True)
        for r, j in zip(ready, targets):
            self._restore(r, j)
        self.pending = [r for r in self.pending if r not in ready]
        self.selected = None
        return f"re-applied {len(ready)} of your refused edit(s)" + self._left()

    def drop(self, key: int) -> str:
        """Drop refused item ``key``: the other person's version stays. Undo lists it again."""
        n = self._refused(key)
        self._record([], pending=True)
        r = self.pending.pop(n)
        self._settle()
        return f"dropped your {KIND_NAMES[r.kind]} #{r.key}: theirs stays" + self._left()

    def drop_all(self) -> str:
        if not self.pending:
            raise UserError("no refused edits to drop")
        self._record([], pending=True)
        n, self.pending = len(self.pending), []
        self._settle()
        return f"dropped {n} refused edit(s): their labels stay" + self._left()

    def _settle(self) -> None:
        """Unsaved while refused items wait or anything differs from the store."""
        self.dirty = bool(self.pending) or any(it.touched for it in self.instances)

    def _left(self) -> str:
        if self.pending:
            return f"; {len(self.pending)} refused edit(s) left to re-apply or drop"
        return "; none left: save to keep the result" if self.dirty else "; none left, nothing to save"

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

    def _record(self, indices: Sequence[int], pending: bool = False) -> None:
        """Before an edit of ``indices`` (and of the refused edits' list, with ``pending``): one undo step."""
        self._activity()
        entry: list[tuple[int, Any]] = [(i, self._snapshot(i)) for i in indices]
        if pending:
            entry.append((PENDING, list(self.pending)))
        self._undo.append(entry)
        self._redo.clear()
        self.dirty = True

    def _swap(self, src: list, dst: list) -> bool:
        if not src:
            return False
        entry = src.pop()
        back, appended = [], []
        for i, before in sorted(entry, key=lambda e: -e[0]):  # created instances are removed from the end
            if i == PENDING:
                back.append((i, list(self.pending)))
                self.pending = list(before)
                continue
            back.append((i, self._snapshot(i)))
            if before is None:  # the edit created instance i
                self.instances.remove(i)
            elif i < len(self.instances):
                self.instances.put(i, before)
            else:
                appended.append((i, before))
        for i, before in sorted(appended, key=lambda e: e[0]):  # and made again in order
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
        annotations.save_review(self.store, self.image_id, self.row_version, self.instances, user, status=status,
                                review=review)
        self._start_timing()
        for k, st in enumerate(self.instances.states):
            if not self.instances.deleted[k]:
                self.instances.loaded_states[k] = st
                self.instances.edited[k] = False
        self.row_version += 1
        self.read_at = utcnow()
        self.status = status
        self.theirs = None
        self.dirty = False
        self._undo.clear()
        self._redo.clear()
        return left

    def discard(self) -> None:
        """Forget every unsaved edit: the image's labels as the store has them now."""
        self._load()
        self.pending, self.theirs = [], None
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
