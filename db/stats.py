"""Counts of what the store holds."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Date, case, func, select
from sqlalchemy.orm import aliased

from db import annotations
from db.schema import IMAGE_STATUSES, REVIEW_STATES, Annotation, Category, Image, Review, Verdict
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


@dataclasses.dataclass
class LabelerDay:
    """What one labeler saved in the Label tab on one day (UTC), from the Review row each save writes and the
    reviewers' verdicts on those saves."""

    user: str
    day: dt.date
    images_saved: int  # distinct images
    saves: int
    seconds: float  # active seconds (pauses between actions left out), summed
    proposals: int  # model proposals reviewed
    accepted_unchanged: int  # of those, accepted as the model made them
    judged: int  # saves a reviewer approved or sent back
    sent_back: int  # of those, saves sent back

    @property
    def seconds_per_image(self) -> float | None:
        return self.seconds / self.images_saved if self.images_saved else None

    @property
    def sent_back_share(self) -> float | None:
        """Of the saves a reviewer judged (not of all saves: most may not be judged yet), the share sent back."""
        return self.sent_back / self.judged if self.judged else None

    @property
    def accepted_unchanged_share(self) -> float | None:
        """Of the proposals reviewed, the share accepted unchanged."""
        return self.accepted_unchanged / self.proposals if self.proposals else None


def labeler_stats(store: Store, since: dt.date | None = None, until: dt.date | None = None) -> list[LabelerDay]:
    """Per labeler and day (UTC) of the saves, from ``since`` to ``until`` (days, both included; None: no
    bound), newest day first, then by name. Each verdict judges the save it was given on: the latest save of
    its image at or before the verdict's time (a verdict needs the labels as they are, so no later save can
    lie between them); a save counts as sent back when any verdict on it sent it back. Aggregated in the
    database: one row per labeler and day comes back, whatever the number of saves."""
    day = func.date(Review.saved_at, type_=Date)
    window = []
    if since is not None:
        window.append(Review.saved_at >= dt.datetime.combine(since, dt.time()))
    if until is not None:
        window.append(Review.saved_at < dt.datetime.combine(until, dt.time()) + dt.timedelta(days=1))
    with store.session() as s:
        saves = s.execute(select(Review.user, day, func.count(func.distinct(Review.image_id)), func.count(),
                                 func.sum(Review.active_seconds), func.sum(Review.proposals),
                                 func.sum(Review.accepted_unchanged))
                          .where(*window).group_by(Review.user, day)).all()
        js = _judged_saves()
        judged = {(user, d): (n, back) for user, d, n, back in s.execute(
            select(Review.user, day, func.count(), func.sum(js.c.back)).join(js, js.c.review_id == Review.id)
            .where(*window).group_by(Review.user, day)).all()}
    out = [LabelerDay(user, d, images, n, float(secs or 0.0), props or 0, unchanged or 0,
                      *(int(v or 0) for v in judged.get((user, d), (0, 0))))
           for user, d, images, n, secs, props, unchanged in saves]
    return sorted(out, key=lambda r: (-r.day.toordinal(), r.user))


def _judged_saves():
    """A subquery of the saves a reviewer judged: (review_id, back: 1 when a verdict sent it back, else 0).
    Each verdict goes to the latest save of its image at or before it."""
    r = aliased(Review)
    save = (select(r.id).where(r.image_id == Verdict.image_id, r.saved_at <= Verdict.at)
            .order_by(r.saved_at.desc(), r.id.desc()).limit(1).correlate(Verdict).scalar_subquery())
    per_verdict = select(save.label("review_id"),
                         case((Verdict.verdict == "sent_back", 1), else_=0).label("back")).subquery()
    sent_back = case((func.sum(per_verdict.c.back) > 0, 1), else_=0)  # any of its verdicts sent it back
    return (select(per_verdict.c.review_id, sent_back.label("back"))
            .where(per_verdict.c.review_id.is_not(None)).group_by(per_verdict.c.review_id).subquery())


LABELER_COLUMNS = ("day (UTC)", "labeler", "images", "s/image", "judged", "sent back", "proposals", "unchanged")


def labeler_lines(days: list[LabelerDay]) -> list[str]:
    """``labeler_stats`` as a text table, one line per labeler and day, with a line saying what the shares are
    of."""
    if not days:
        return ["no saves in the Label tab (in these days)"]
    width = max(7, *(len(d.user) for d in days))
    row = "{:<10}  {:<%d}  {:>6}  {:>7}  {:>6}  {:>9}  {:>9}  {:>9}" % width
    out = [row.format(*LABELER_COLUMNS)]
    out += [row.format(d.day.isoformat(), d.user, d.images_saved, _fixed(d.seconds_per_image, 1), d.judged,
                       _percent(d.sent_back_share), d.proposals, _percent(d.accepted_unchanged_share))
            for d in days]
    out.append("images: distinct images saved; s/image: active seconds per image; judged: saves a reviewer "
               "approved or sent back; sent back: of the judged saves; unchanged: of the proposals reviewed, "
               "accepted as the model made them")
    return out


def _fixed(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"
