"""Undo and redo of one image's edits, as their own object (``EditHistory``).

A step records what one edit changed: for each instance it touched, that instance as it was before (its
segmentation as RLE or polygons, never a decoded frame; a decoded crop is dropped from the copy), or None for
an instance the edit created; and, for the edits that change it, the list of refused edits as it was (an
opaque value the caller restores). So a step costs memory in proportion to the instances it touched, not to
the image. The history has a budget in bytes: when the steps held exceed it, the oldest are dropped (and
``dropped`` counts them, for the caller to say so); the newest step is always kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from db.instances import Instances

NOTHING = object()  # a step that leaves the caller's extra state alone
DEFAULT_BUDGET = 32 * 2 ** 20  # bytes of undo and redo steps per open image


@dataclasses.dataclass(eq=False)
class Step:
    """One edit: ``changes`` holds (instance index, that instance before the edit as a one-instance
    Instances, or None where the edit created it); ``extra`` the caller's state before it, or NOTHING."""

    changes: list[tuple[int, Instances | None]]
    extra: Any = NOTHING
    nbytes: int = 0


def _snapshot(instances: Instances, i: int) -> Instances | None:
    """Instance ``i`` as it is now, holding its segmentation only (no decoded crop); None past the end."""
    if i >= len(instances):
        return None
    one = instances.take([i])
    one.forget_decoded()
    return one


def _step(changes: list[tuple[int, Instances | None]], extra: Any) -> Step:
    """A step and its size: the instances it holds, and the refused edits' list when it holds one."""
    size = 200 + sum(64 + (one.nbytes() if one is not None else 0) for _, one in changes)
    if extra is not NOTHING:  # the refused edits' list as it was (annotator.conflicts.Refused items)
        size += sum(r.mine.nbytes() for r in extra)
    return Step(changes, extra, size)


class EditHistory:
    """The undo and redo steps of one open image, within ``budget`` bytes."""

    def __init__(self, budget: int = DEFAULT_BUDGET):
        self.budget = int(budget)
        self._undo: list[Step] = []
        self._redo: list[Step] = []
        self.nbytes = 0  # held by both lists
        self.dropped = 0  # oldest steps dropped for the budget since the last ``clear``

    def __len__(self) -> int:
        return len(self._undo)

    def record(self, instances: Instances, indices: Sequence[int], extra: Any = NOTHING) -> None:
        """Before an edit of ``indices`` (and of the caller's ``extra`` state, when given): one undo step.
        Redo steps are gone (the edit starts a new branch)."""
        self._forget(self._redo)
        self._push(self._undo, _step([(i, _snapshot(instances, i)) for i in indices], extra))

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self.nbytes, self.dropped = 0, 0

    def undo(self, instances: Instances, extra_now: Any = NOTHING) -> tuple[bool, Any]:
        """Take the last step back: returns (whether there was one, the caller's extra state to restore or
        NOTHING)."""
        return self._swap(self._undo, self._redo, instances, extra_now)

    def redo(self, instances: Instances, extra_now: Any = NOTHING) -> tuple[bool, Any]:
        return self._swap(self._redo, self._undo, instances, extra_now)

    # --- inside -------------------------------------------------------------------------------------
    def _push(self, stack: list[Step], step: Step) -> None:
        stack.append(step)
        self.nbytes += step.nbytes
        while self.nbytes > self.budget and len(self._undo) + len(self._redo) > 1:
            oldest = self._undo if self._undo and (self._undo is not stack or len(self._undo) > 1) else self._redo
            gone = oldest.pop(0)
            self.nbytes -= gone.nbytes
            self.dropped += 1

    def _forget(self, stack: list[Step]) -> None:
        self.nbytes -= sum(s.nbytes for s in stack)
        stack.clear()

    def _swap(self, src: list[Step], dst: list[Step], instances: Instances, extra_now: Any) -> tuple[bool, Any]:
        if not src:
            return False, NOTHING
        step = src.pop()
        self.nbytes -= step.nbytes
        back: list[tuple[int, Instances | None]] = []
        appended = []
        for i, before in sorted(step.changes, key=lambda e: -e[0]):  # created instances go from the end
            back.append((i, _snapshot(instances, i)))
            if before is None:  # the edit created instance i
                instances.remove(i)
            elif i < len(instances):
                instances.put(i, before)
            else:
                appended.append((i, before))
        for _i, before in sorted(appended, key=lambda e: e[0]):  # and made again in order
            instances.append(before)
        self._push(dst, _step(back, NOTHING if step.extra is NOTHING else extra_now))
        return True, step.extra
