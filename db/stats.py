"""Counts of what the store holds."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

from db import annotations
from db.schema import IMAGE_STATUSES, REVIEW_STATES, Annotation, Category, Image, Review
from db.store import Store


@dataclasses.dataclass
class StoreStats:
    images_by_status: dict[str, int]
    # category name -> review state -> count
    annotations_by_category: dict[str, dict[str, int]]
    problems: int = 0  # images with a recorded problem (db.annotations.record_problems)
    problem_images: list[annotations.ImageProblem] = dataclasses.field(default_factory=list)  # the first ones

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
        if self.problems:
            out.append(f"images the model could not use (skipped, with the reason): {self.problems}")
            out += [f"  #{p.id} {p.file_name}: {p.problem}" + (f" ({p.at:%Y-%m-%d %H:%M} UTC)" if p.at else "")
                    for p in self.problem_images]
            if self.problems > len(self.problem_images):
                out.append(f"  ... and {self.problems - len(self.problem_images)} more")
        return out


PROBLEMS_SHOWN = 100  # images with a problem listed by name (all of them are counted)


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
    n_problems, problem_images = annotations.images_with_problems(store, PROBLEMS_SHOWN)
    return StoreStats(by_status, {name: per[cid] for cid, name in cats}, n_problems, problem_images)



@dataclasses.dataclass
class ReviewStats:
    """What labelers did with one model version's proposals, summed over the saves of the Label tab
    (db.schema.Review); ``version_id`` None: images saved with no model proposal on them."""

    version_id: int | None
    images: int  # distinct images saved
    saves: int
    proposals: int  # proposals reviewed
    accepted_unchanged: int
    accepted_edited: int
    rejected: int
    drawn: int  # instances drawn from nothing
    assisted: int  # instances added by box or point assist
    keypoints_moved: int
    mean_iou: float | None  # mask IoU from the proposal as made to the label as saved, accepted proposals
    seconds: float  # active seconds (pauses over a minute left out)

    @property
    def share_unchanged(self) -> float | None:
        return self.accepted_unchanged / self.proposals if self.proposals else None

    def per_image(self, count: float) -> float | None:
        return count / self.images if self.images else None


def review_stats(store: Store) -> list[ReviewStats]:
    """Per model version (in id order, then images saved with no proposal), from the Review rows."""
    cols = [Review.accepted_unchanged, Review.accepted_edited, Review.rejected, Review.drawn, Review.assisted,
            Review.keypoints_moved]
    with store.session() as s:
        rows = s.execute(
            select(Review.model_version_id, func.count(func.distinct(Review.image_id)), func.count(),
                   func.sum(Review.proposals), *(func.sum(c) for c in cols), func.sum(Review.iou_sum),
                   func.sum(Review.iou_count), func.sum(Review.active_seconds))
            .group_by(Review.model_version_id)).all()
    out = []
    for vid, images, saves, proposals, un, ed, rej, drawn, assisted, kp, iou_sum, iou_n, secs in rows:
        out.append(ReviewStats(vid, images, saves, proposals or 0, un or 0, ed or 0, rej or 0, drawn or 0,
                               assisted or 0, kp or 0, (iou_sum / iou_n) if iou_n else None, float(secs or 0.0)))
    return sorted(out, key=lambda r: (r.version_id is None, r.version_id or 0))
