"""Counts of what the store holds."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

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
