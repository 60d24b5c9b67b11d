"""Two browsers on one image: after a save was refused (someone else saved first, or proposals were made
again), the person's changes are kept as ``Refused`` items next to the labels as saved now, to re-apply or
drop one by one (``ConflictReview``). Nothing is written here; the session's save writes the result.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from db import annotations
from db.errors import UserError
from db.instances import Instances

KIND_NAMES = {"edited": "edit", "reviewed": "review", "drawn": "drawn instance", "assisted": "assist instance",
              "deleted": "deletion"}  # a Refused item's kind, as said to the person


@dataclasses.dataclass(frozen=True, eq=False)
class Refused:
    """One change of this person's that a save refused because someone else saved the image first, kept for
    them to re-apply or drop. ``mine`` is their version of the instance (one instance, copied, its mask as
    RLE; for a deletion, the instance as they last saw it); ``ann_id`` the row it changes, None for an
    instance they drew or added by assist."""

    key: int  # stable within the session: what the canvas's reapply and drop_mine messages name
    kind: str  # "edited", "reviewed" (accepted or rejected, unchanged), "drawn", "assisted" or "deleted"
    ann_id: int | None
    mine: Instances
    category_name: str  # the class's name when the save was refused (to name it should it be deleted)


class ConflictReview:
    """The refused edits of one open image (``pending``) and who saved the labels shown (``theirs``)."""

    def __init__(self, session: Any):
        self.ls = session  # the annotator.labeling.LabelSession it belongs to (which makes this object)
        self.pending: list[Refused] = []
        self.theirs: tuple[str, Any] | None = None  # after a conflict: who saved the labels shown, and when
        self._keys = 0  # the last Refused.key given

    def clear(self) -> None:
        self.pending, self.theirs = [], None

    def review(self) -> str:
        """After a SaveConflict: show the image's labels as the store has them now (what the other person
        saved, or the proposals made again) and keep each of this person's changes as a ``Refused`` item in
        ``pending`` (a change the same as theirs is not listed). Nothing is written, and the image stays
        unsaved while items are pending. Returns what to tell the person."""
        ls = self.ls
        old, old_cats, since = ls.instances, ls.categories, ls.read_at
        mine = [i for i, it in enumerate(old) if it.touched]
        ls.reload()
        current = {a: k for k, a in enumerate(ls.instances.ann_ids)}
        found, same = [], 0
        for i in mine:
            it = old[i]
            k = current.get(it.ann_id) if it.ann_id is not None else None
            if it.deleted and k is None:
                continue  # drawn and deleted again, or deleted by both
            if k is not None and not it.deleted and it.state == ls.instances.states[k] \
                    and old.row_values(i) == ls.instances.row_values(k):
                same += 1
                continue
            kind = ("deleted" if it.deleted else ("assisted" if it.source == "assist" else "drawn")
                    if it.ann_id is None else "edited" if it.edited else "reviewed")
            info = old_cats.get(it.category_id)
            self._keys += 1
            kept = old.take([i])
            kept.forget_decoded()  # kept as RLE: a list of refused edits costs what their outlines do
            found.append(Refused(self._keys, kind, it.ann_id, kept, info.name if info else str(it.category_id)))
        self.pending = self.pending + found  # (items not decided yet stay listed)
        self.theirs = annotations.last_save(ls.store, ls.image_id, after=since)
        ls.selected = None
        ls.edits.clear()
        ls.dirty = bool(self.pending)
        how = (f"{self.theirs[0] or 'someone'} saved it" if self.theirs
               else "saved from another browser, proposed again, or a category changed")
        said = [f"image {ls.image_id} changed in the store since you opened it ({how}); nothing of yours was "
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

    def refresh(self) -> str:
        """Read the image's labels as the store has them now (new proposals, another person's save) and keep
        this person's unsaved changes on top: each is re-applied where it can be (``review`` then
        ``reapply_all``); one whose class was deleted stays listed to re-apply or drop. Nothing is written."""
        ls = self.ls
        if not ls.dirty and not self.pending:  # nothing of theirs to keep: the store's labels as they are
            ls.reload()
            ls.edits.clear()
            ls.select_first()
            return "read this image's labels again"
        said = self.review()
        if any(not self.blocked(r) for r in self.pending):
            said = self.reapply_all()
        return said + " (your unsaved changes are kept on top of the labels read again)"

    def blocked(self, r: Refused) -> str:
        """Why refused item ``r`` cannot be re-applied (its class was deleted meanwhile), or ""."""
        cid = r.mine.category_ids[0]
        if r.kind == "deleted" or cid in self.ls.categories:
            return ""
        return f"#{r.key}'s class '{r.category_name}' (id {cid}) was deleted meanwhile: drop it"

    def current_index(self, r: Refused) -> int | None:
        """The index of the instance ``r`` changes in the labels shown now; None when its row is gone (or it
        was drawn here)."""
        if r.ann_id is None:
            return None
        return next((k for k, a in enumerate(self.ls.instances.ann_ids) if a == r.ann_id), None)

    def _refused(self, key: int) -> int:
        for n, r in enumerate(self.pending):
            if r.key == key:
                return n
        left = ", ".join(f"#{r.key}" for r in self.pending)
        raise UserError(f"no refused edit #{key}" + (f"; the list holds {left}" if left else ": none are left"))

    def _restore(self, r: Refused, j: int | None) -> None:
        """Put refused item ``r`` into the labels at ``j`` (from ``_targets``): over the other person's version
        of it, or as a new instance at the end when its row is gone; a deletion deletes ``j``."""
        inst = self.ls.instances
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
        out, new = [], len(self.ls.instances)
        for r in items:
            j = self.current_index(r)
            if j is None and r.kind != "deleted":
                j, new = new, new + 1
            out.append(j)
        return out

    def reapply(self, key: int) -> str:
        """Re-apply refused item ``key``: it replaces the other person's version of that instance (is added as
        new when its row is gone; a deletion deletes). One undo step, which lists the item again."""
        ls = self.ls
        n = self._refused(key)
        r = self.pending[n]
        why = self.blocked(r)
        if why:
            raise UserError(f"cannot re-apply: {why}")
        (j,) = self._targets([r])
        ls.record([j] if j is not None else [], pending=True)
        self._restore(r, j)
        del self.pending[n]
        if j is not None and r.kind != "deleted":
            ls.selected = j
        elif ls.selected is not None and ls.instances[ls.selected].deleted:
            ls.selected = None
        where = f" as #{j}" if j is not None and r.kind != "deleted" else ""
        return f"re-applied your {KIND_NAMES[r.kind]} #{r.key}{where}" + self._left()

    def reapply_all(self) -> str:
        """Re-apply every refused item that can be (not those whose class was deleted); one undo step."""
        ready = [r for r in self.pending if not self.blocked(r)]
        if not ready:
            raise UserError("no refused edit to re-apply" + (": " + "; ".join(map(self.blocked, self.pending))
                                                             if self.pending else ""))
        targets = self._targets(ready)
        self.ls.record([j for j in targets if j is not None], pending=True)
        for r, j in zip(ready, targets):
            self._restore(r, j)
        self.pending = [r for r in self.pending if r not in ready]
        self.ls.selected = None
        return f"re-applied {len(ready)} of your refused edit(s)" + self._left()

    def drop(self, key: int) -> str:
        """Drop refused item ``key``: the other person's version stays. Undo lists it again."""
        n = self._refused(key)
        self.ls.record([], pending=True)
        r = self.pending.pop(n)
        self._settle()
        return f"dropped your {KIND_NAMES[r.kind]} #{r.key}: theirs stays" + self._left()

    def drop_all(self) -> str:
        if not self.pending:
            raise UserError("no refused edits to drop")
        self.ls.record([], pending=True)
        n, self.pending = len(self.pending), []
        self._settle()
        return f"dropped {n} refused edit(s): their labels stay" + self._left()

    def _settle(self) -> None:
        """Unsaved while refused items wait or anything differs from the store."""
        self.ls.dirty = bool(self.pending) or any(it.touched for it in self.ls.instances)

    def _left(self) -> str:
        if self.pending:
            return f"; {len(self.pending)} refused edit(s) left to re-apply or drop"
        return "; none left: save to keep the result" if self.ls.dirty else "; none left, nothing to save"
