"""Counts of what the store holds."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

from db import masks
from db.schema import IMAGE_STATUSES, REVIEW_STATES, Annotation, Category, Image
from db.store import Store


@dataclasses.dataclass
class StoreStats:
    images_by_status: dict[str, int]
    # category name -> review state -> count
    annotations_by_category: dict[str, dict[str, int]]

    @property
    def images(self) -> int:
        return sum(self.images_by_status.values())

    def lines(self) -> list[str]:
        out = [f"images: {self.images}"]
        out += [f"  {st:<10} {n}" for st, n in self.images_by_status.items()]
        out.append("annotations by category (accepted / proposed / rejected):")
        if not self.annotations_by_category:
            out.append("  (no categories)")
        for name, c in self.annotations_by_category.items():
            out.append(f"  {name:<20} {c['accepted']:>7} / {c['proposed']:>7} / {c['rejected']:>7}")
        return out


def stats(store: Store) -> StoreStats:
    with store.session() as s:
        by_status = dict.fromkeys(IMAGE_STATUSES, 0)
        by_status.update(dict(s.execute(select(Image.status, func.count()).group_by(Image.status)).all()))
        cats = s.execute(select(Category.id, Category.name).order_by(Category.id)).all()
        counts = s.execute(select(Annotation.category_id, Annotation.review_state, func.count())
                           .group_by(Annotation.category_id, Annotation.review_state)).all()
    per = {cid: dict.fromkeys(REVIEW_STATES, 0) for cid, _ in cats}
    for cid, state, n in counts:
        per.setdefault(cid, dict.fromkeys(REVIEW_STATES, 0))[state] = n
    return StoreStats(by_status, {name: per[cid] for cid, name in cats})


@dataclasses.dataclass
class CorrectionStats:
    """How much labelers changed one model version's proposals."""

    version_id: int
    reviewed: int  # accepted or rejected
    accepted_unchanged: int
    accepted_edited: int
    rejected: int
    mean_iou: float | None  # between the proposal's mask and the saved mask, over accepted proposals

    @property
    def share_unchanged(self) -> float | None:
        return self.accepted_unchanged / self.reviewed if self.reviewed else None


def correction_stats(store: Store) -> list[CorrectionStats]:
    out: dict[int, dict] = {}
    with store.session() as s:
        rows = s.execute(
            select(Annotation.model_version_id, Annotation.review_state, Annotation.segmentation,
                   Annotation.category_id, Annotation.original, Image.height, Image.width)
            .join(Image, Image.id == Annotation.image_id)
            .where(Annotation.source == "model", Annotation.model_version_id.is_not(None),
                   Annotation.review_state.in_(("accepted", "rejected")))
        ).all()
    for vid, state, seg, cat, orig, h, w in rows:
        d = out.setdefault(vid, {"reviewed": 0, "unchanged": 0, "edited": 0, "rejected": 0, "ious": []})
        d["reviewed"] += 1
        if state == "rejected":
            d["rejected"] += 1
            continue
        orig = orig or {}
        same = orig.get("segmentation") == seg and orig.get("category_id", cat) == cat
        d["unchanged" if same else "edited"] += 1
        if orig.get("segmentation") and seg:
            d["ious"].append(1.0 if orig["segmentation"] == seg else
                             masks.iou(masks.decode(orig["segmentation"], h, w), masks.decode(seg, h, w)))
    return [CorrectionStats(vid, d["reviewed"], d["unchanged"], d["edited"], d["rejected"],
                            sum(d["ious"]) / len(d["ious"]) if d["ious"] else None)
            for vid, d in sorted(out.items())]
