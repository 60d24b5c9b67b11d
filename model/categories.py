"""The mapping between the store's categories (COCO ids, kept as given) and the model's contiguous
labels (1..N, 0 is background), plus where each keypoint category's keypoints sit in the keypoint head.

Saved with every checkpoint; a checkpoint whose classes disagree with the store is refused by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from db.errors import UserError


@dataclasses.dataclass(frozen=True)
class CategoryMap:
    ids: tuple[int, ...]  # store category id of label i+1
    names: tuple[str, ...]
    keypoints: tuple[tuple[str, ...], ...]  # per label, () when the category has none

    @classmethod
    def from_categories(cls, cats: Iterable[Any]) -> "CategoryMap":
        cats = sorted(cats, key=lambda c: c.id)
        return cls(tuple(c.id for c in cats), tuple(c.name for c in cats),
                   tuple(tuple(c.keypoints or ()) for c in cats))

    @classmethod
    def from_dict(cls, d: dict) -> "CategoryMap":
        return cls(tuple(d["ids"]), tuple(d["names"]), tuple(tuple(k) for k in d["keypoints"]))

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "names": list(self.names), "keypoints": [list(k) for k in self.keypoints]}

    @property
    def num_classes(self) -> int:  # with background
        return len(self.ids) + 1

    def label(self, category_id: int) -> int:
        return self.ids.index(category_id) + 1

    def category_id(self, label: int) -> int:
        return self.ids[label - 1]

    # --- keypoints: each keypoint category owns a slice of the keypoint head's channels ---------------
    @property
    def keypoint_slices(self) -> dict[int, slice]:
        """label -> slice of the keypoint head's outputs."""
        out, start = {}, 0
        for i, kps in enumerate(self.keypoints, start=1):
            if kps:
                out[i] = slice(start, start + len(kps))
                start += len(kps)
        return out

    @property
    def num_keypoints(self) -> int:
        return sum(len(k) for k in self.keypoints)

    def flip_permutation(self) -> list[int]:
        """Index permutation of the keypoint channels under a horizontal flip (left_* <-> right_*)."""
        perm = list(range(self.num_keypoints))
        for label, sl in self.keypoint_slices.items():
            names = list(self.keypoints[label - 1])
            for j, n in enumerate(names):
                other = _mirror(n)
                if other != n and other in names:
                    perm[sl.start + j] = sl.start + names.index(other)
        return perm

    def shared_with(self, store_map: "CategoryMap") -> list[int]:
        """The category ids both maps have with the same name and keypoints."""
        theirs = dict(zip(store_map.ids, zip(store_map.names, store_map.keypoints)))
        return [cid for cid, n, k in zip(self.ids, self.names, self.keypoints) if theirs.get(cid) == (n, k)]

    def check_matches(self, store_map: "CategoryMap", partial: bool = False) -> None:
        """Refuse a checkpoint made for other classes, saying which. With ``partial``, one that shares at
        least one class with the store is accepted (it proposes those; categories added since are not)."""
        if self == store_map or (partial and self.shared_with(store_map)):
            return
        problems = []
        mine = dict(zip(self.ids, zip(self.names, self.keypoints)))
        theirs = dict(zip(store_map.ids, zip(store_map.names, store_map.keypoints)))
        for cid in sorted(set(mine) | set(theirs)):
            if cid not in theirs:
                problems.append(f"checkpoint has category {cid} '{mine[cid][0]}' that the store does not")
            elif cid not in mine:
                problems.append(f"store has category {cid} '{theirs[cid][0]}' that the checkpoint does not")
            elif mine[cid][0] != theirs[cid][0]:
                problems.append(f"category {cid} is '{mine[cid][0]}' in the checkpoint, '{theirs[cid][0]}' in the store")
            elif mine[cid][1] != theirs[cid][1]:
                problems.append(f"category {cid} '{mine[cid][0]}' has other keypoints in the checkpoint")
        raise UserError("checkpoint classes disagree with the store: " + "; ".join(problems))


def _mirror(name: str) -> str:
    for a, b in (("left", "right"), ("Left", "Right"), ("l_", "r_"), ("L_", "R_")):
        if name.startswith(a):
            return b + name[len(a):]
        if name.startswith(b):
            return a + name[len(b):]
    return name
