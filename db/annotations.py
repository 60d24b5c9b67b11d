"""Every read and write of annotation and image rows, and every image status transition.

No module outside ``db/`` runs SQL on the ``images`` or ``annotations`` tables: the labeling logic, the
proposal writer, the training data, the queue and the gallery all come here. Ids of new rows come from the
database. One optimistic lock guards an image's labels: its ``row_version``, moved on by every write that
changes them (a save, a proposal run, an import onto an existing image), compared by ``save_review``.
Every writer locks the image row before its annotation rows, so concurrent writers wait but never deadlock.

Image statuses move ``new`` -> ``proposed`` (proposals written) -> ``in_review`` (someone opened it) ->
``done`` (saved); an import as labels writes ``done``, as proposals ``proposed``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Iterable, Sequence

from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from db import masks as mask_codec
from db.errors import UserError
from db.instances import Instances
from db.schema import VERDICTS, Annotation, Category, Claim, Image, Review, Verdict, utcnow
from db.store import Store

HELDOUT_EVERY = 5  # one image in five is held out, chosen by a hash of its id
# The default queue is a fixed shuffle: bench/loop.py measured it against "most uncertain first" and found
# it better (docs/loop.md: 2026-11-26, last round 43.0 against 66.3 s of labeling per image).
QUEUE_FILTERS = ["to label (shuffled)", "to label (most uncertain first)", "to review (done, awaiting a reviewer)",
                 "new", "proposed", "in_review", "done", "all"]
UNCERTAIN_FIRST = QUEUE_FILTERS[1]
TO_REVIEW = QUEUE_FILTERS[2]


class SaveConflict(UserError):
    """The image changed in the store since it was read (another browser saved it, or proposals were made
    again), or a row being saved is gone; nothing was written."""


class KeypointsDoNotFit(UserError):
    """A save holds a keypoint list that its category's list, as it is now, does not fit (the category's
    keypoints were changed since the labels were read); nothing was written."""


def is_heldout(image_id: int) -> bool:
    """Fixed held-out split by image id: stable as the store grows (Knuth's multiplicative hash)."""
    return ((image_id * 2654435761) % 2**32) % HELDOUT_EVERY == 0


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str
    media_path: str
    width: int
    height: int
    status: str
    row_version: int
    problem: str | None = None  # why the model could not use it the last time it tried (record_problems)
    proposed_version_id: int | None = None  # the model version that last proposed on it


def _record(im: Image) -> ImageRecord:
    return ImageRecord(im.id, im.file_name, im.media_path, im.width, im.height, im.status, im.row_version,
                       im.problem, im.proposed_version_id)


@dataclasses.dataclass
class ImageLabels:
    """One image as read for labeling: the image, every category (by id) and its annotation rows (result rows
    with every column of Annotation, by id)."""

    image: ImageRecord
    categories: list[Category]
    annotations: list  # rows with Annotation's columns as attributes


def load(store: Store, image_id: int, *, opening: bool = False) -> ImageLabels:
    """The image with its labels; ``opening`` it for labeling, a ``new`` or ``proposed`` image becomes
    ``in_review`` (someone is looking at it; its row version stays, since its labels did not change)."""
    with store.session() as s:
        im = s.get(Image, image_id)
        if im is None:
            raise UserError(f"no image with id {image_id}")
        cats = list(s.scalars(select(Category).order_by(Category.id)))
        # the rows' columns, not ORM objects: an image may hold tens of thousands of annotations
        anns = list(s.execute(select(*Annotation.__table__.columns).where(Annotation.image_id == image_id)
                              .order_by(Annotation.id)))
        record = _record(im)
    if opening and record.status in ("new", "proposed"):
        mark_in_review(store, image_id)
        record = dataclasses.replace(record, status="in_review")
    return ImageLabels(record, cats, anns)


def mark_in_review(store: Store, image_id: int) -> None:
    """Someone opened the image: ``new`` or ``proposed`` becomes ``in_review``."""
    with store.transaction() as s:
        s.execute(update(Image).where(Image.id == image_id, Image.status.in_(("new", "proposed")))
                  .values(status="in_review"))


def save_review(store: Store, image_id: int, row_version: int, instances: Instances, user: str,
                states: Sequence[str] | None = None, status: str = "done", review: dict | None = None) -> list[int]:
    """The optimistic-locking save of a labeling session: in one transaction, set the image's ``status``
    (``done``, or ``in_review`` while proposals are left unreviewed) and write
    every instance (``deleted`` ones are deleted, new ones inserted, ``edited`` ones rewritten, the rest get
    their review state), with ``states`` in place of ``instances.states`` when given. Only if the image's row
    version is still ``row_version`` and every row being saved still exists: otherwise SaveConflict, and
    nothing is written. Every keypoint list written (new and edited instances) must fit its category's list as
    it is at the save: otherwise KeypointsDoNotFit, naming the category and both counts, and nothing is
    written. New instances get their ids from the database (set in ``instances.ann_ids``).
    ``review``: the columns of a Review row (what the labeler did, how long it took), written with it."""
    states = list(states if states is not None else instances.states)
    try:
        if status not in ("done", "in_review"):
            raise ValueError(f"a review saves an image as done or in_review, not {status!r}")
        return _save_review(store, image_id, row_version, instances, user, states, status, review)
    except IntegrityError as e:  # e.g. a category deleted meanwhile while a new instance uses it
        raise SaveConflict(f"image {image_id}: the labels refer to something changed meanwhile (a category "
                           f"deleted or merged?); nothing was written ({str(e.orig).splitlines()[0]})") from None


def _save_review(store: Store, image_id: int, row_version: int, instances: Instances, user: str,
                 states: list[str], status: str, review: dict | None) -> list[int]:
    now = utcnow()
    with store.transaction() as s:
        values = dict(status=status, row_version=row_version + 1, updated_at=now)
        if status == "done":  # finished labels wait for a reviewer's verdict (awaiting_review)
            values.update(saved_by=user, saved_at=now)
        res = s.execute(update(Image).where(Image.id == image_id, Image.row_version == row_version).values(**values))
        if res.rowcount != 1:
            raise SaveConflict(f"image {image_id} changed in the store since you opened it (saved from another "
                               "browser, or proposed again); nothing was written")
        _check_keypoints_fit(s, instances)
        if status == "done":  # finished: nobody holds it any more (db.claims)
            s.execute(delete(Claim).where(Claim.image_id == image_id))
        existing = set(s.scalars(select(Annotation.id).where(Annotation.image_id == image_id)))
        gone = [a for a, d in zip(instances.ann_ids, instances.deleted) if a is not None and a not in existing and not d]
        if gone:  # never drop an edit silently: the whole save is refused (and rolled back)
            raise SaveConflict(f"annotation(s) {', '.join(map(str, gone))} of image {image_id} are no longer in "
                               "the store; nothing was written")
        new_rows, new_at = [], []
        for i in range(len(instances)):
            ann_id = instances.ann_ids[i]
            if instances.deleted[i]:
                if ann_id is not None:
                    s.execute(delete(Annotation).where(Annotation.id == ann_id))
            elif ann_id is None:  # drawn here, or a proposal whose row was replaced meanwhile (it keeps where
                new_rows.append(dict(image_id=image_id, **instances.row_values(i),  # it came from)
                                     source=instances.sources[i], score=instances.scores[i],
                                     model_version_id=instances.model_version_ids[i],
                                     original=instances.originals[i], review_state=states[i], created_by=user,
                                     reviewed_by=user, created_at=now, reviewed_at=now))
                new_at.append(i)
            else:
                vals = dict(review_state=states[i])
                if states[i] != "proposed":  # a proposal left unreviewed keeps no reviewer
                    vals.update(reviewed_by=user, reviewed_at=now)
                if instances.edited[i]:
                    vals.update(instances.row_values(i))
                s.execute(update(Annotation).where(Annotation.id == ann_id).values(**vals))
        ids = list(s.scalars(insert(Annotation).returning(Annotation.id, sort_by_parameter_order=True),
                             new_rows)) if new_rows else []
        if review is not None:
            s.add(Review(image_id=image_id, **review))
    for i, new_id in zip(new_at, ids):
        instances.ann_ids[i] = new_id
    return ids


def _check_keypoints_fit(s, instances: Instances) -> None:
    """Raises KeypointsDoNotFit when a keypoint list the save writes (a new or edited instance's) is not 3 values
    per keypoint of its category as the store has it now. The categories are read under a share lock (FOR
    SHARE on PostgreSQL; SQLite's writing transaction holds its lock from its start), so a change of their
    keypoints (db.categories.update_category, which locks the row) waits for this save or goes first."""
    written = [i for i in range(len(instances)) if not instances.deleted[i] and instances.keypoints[i] is not None
               and (instances.ann_ids[i] is None or instances.edited[i])]
    if not written:
        return
    ids = sorted({instances.category_ids[i] for i in written})
    cats = {c.id: c for c in s.execute(select(Category.id, Category.name, Category.keypoints)
                                       .where(Category.id.in_(ids)).with_for_update(read=True))}
    for i in written:
        cat = cats.get(instances.category_ids[i])
        if cat is None:  # deleted meanwhile: the insert's foreign key refuses it (SaveConflict)
            continue
        k, n = len(cat.keypoints or []), len(instances.keypoints[i])
        if n != 3 * k:
            what = f"annotation {instances.ann_ids[i]}" if instances.ann_ids[i] is not None else "a new instance"
            raise KeypointsDoNotFit(
                f"category '{cat.name}' lists {k} keypoint(s) now, but {what} holds {n // 3} (placed on the list "
                "as it was when the image was read: the category was changed since); nothing was written")


def write_proposals(store: Store, image_id: int, proposals: Instances, model_version_id: int) -> int:
    """Replace the image's unreviewed model proposals with ``proposals``. Rows a person reviewed, edited or
    drew are never touched. The image's row version always moves on, so a browser that has the image open
    cannot save over the new proposals: its save is refused and its edits are kept for review
    (annotator.labeling.LabelSession.review_conflict). Returns how many were written."""
    return write_proposals_of_images(store, {image_id: proposals}, model_version_id)[image_id]


def write_proposals_of_images(store: Store, proposals: dict[int, Instances], model_version_id: int) -> dict[int, int]:
    """``write_proposals`` for several images in one transaction (all of them or none); how many were
    written per image."""
    now = utcnow()
    by_image: dict[int, list[dict]] = {}
    for image_id, inst in proposals.items():
        rows = by_image[image_id] = []
        for i in range(len(inst)):
            values = inst.row_values(i)
            original = {k: values[k] for k in ("category_id", "segmentation", "bbox", "keypoints")
                        if values[k] is not None}  # the proposal as made, to measure corrections against
            rows.append(dict(image_id=image_id, **values, source="model", score=inst.scores[i],
                             model_version_id=model_version_id, review_state="proposed", original=original,
                             created_by="model", created_at=now))
    with store.transaction() as s:
        for image_id in sorted(by_image):  # (every multi-image writer locks images in id order)
            rows = by_image[image_id]
            # The image row first, then its annotations: every writer takes locks in this order (save_review,
            # category moves, imports), so two of them can wait for each other but never deadlock.
            # "proposed" means there is something to review: an image the model found nothing in stays (or
            # goes back to) "new", still waiting for labels
            s.execute(update(Image).where(Image.id == image_id)
                      .values(status=case((Image.status.in_(("new", "proposed")), "proposed" if rows else "new"),
                                          else_=Image.status),
                              row_version=Image.row_version + 1, updated_at=now,
                              proposed_version_id=model_version_id, claimed_by=None, claimed_until=None,
                              problem=None, problem_at=None))  # the model could use it, whatever it said before
            s.execute(delete(Annotation).where(Annotation.image_id == image_id,
                                               Annotation.review_state == "proposed", Annotation.source == "model"))
        every = [r for image_id in sorted(by_image) for r in by_image[image_id]]
        if every:
            s.execute(insert(Annotation), every)
    return {image_id: len(rows) for image_id, rows in by_image.items()}


MAX_PROBLEM = 500  # characters of a recorded reason


def record_problems(store: Store, problems: dict[int, str], version_id: int | None = None) -> None:
    """Record why these images could not be used (image id -> reason; an image gone meanwhile is passed over).
    Their labels, status, row version and place in the queues stay as they are. With ``version_id`` (a
    proposal run of that model version) the image counts as looked at by it: its claim ends, and workers do
    not claim it again until another version is active (which tries it again)."""
    if not problems:
        return
    now = utcnow()
    with store.transaction() as s:
        for image_id in sorted(problems):  # (every multi-image writer locks images in id order)
            values = dict(problem=str(problems[image_id])[:MAX_PROBLEM], problem_at=now,
                          updated_at=Image.updated_at)  # (not a change of its labels: the review order stays)
            if version_id is not None:
                values.update(proposed_version_id=version_id, claimed_by=None, claimed_until=None)
            s.execute(update(Image).where(Image.id == image_id).values(**values))


def clear_problems(store: Store, image_ids: Iterable[int]) -> None:
    """These images were used successfully: the problems recorded on them are forgotten."""
    ids = sorted(set(image_ids))
    if not ids:
        return
    with store.transaction() as s:
        for k in range(0, len(ids), 900):
            s.execute(update(Image).where(Image.id.in_(ids[k:k + 900]), Image.problem.is_not(None))
                      .values(problem=None, problem_at=None, updated_at=Image.updated_at))


@dataclasses.dataclass(frozen=True)
class ImageProblem:
    id: int
    file_name: str
    problem: str
    at: dt.datetime | None


def images_with_problems(store: Store, limit: int = 100) -> tuple[int, list[ImageProblem]]:
    """How many images have a recorded problem, and the first ``limit`` of them by id."""
    with store.session() as s:
        n = s.scalar(select(func.count()).select_from(Image).where(Image.problem.is_not(None))) or 0
        rows = s.execute(select(Image.id, Image.file_name, Image.problem, Image.problem_at)
                         .where(Image.problem.is_not(None)).order_by(Image.id).limit(max(0, int(limit)))).all()
    return n, [ImageProblem(*r) for r in rows]


def images(store: Store, image_ids: Iterable[int]) -> dict[int, ImageRecord]:
    """The images with these ids that exist, by id."""
    ids = list(image_ids)
    out: dict[int, ImageRecord] = {}
    with store.session() as s:
        for k in range(0, len(ids), 900):
            out.update((im.id, _record(im)) for im in s.scalars(select(Image).where(Image.id.in_(ids[k:k + 900]))))
    return out


def image_ids(store: Store, status: str | None = None, *, not_status: str | None = None) -> list[int]:
    """Image ids by id, all or those with (or without) a status."""
    q = select(Image.id).order_by(Image.id)
    if status is not None:
        q = q.where(Image.status == status)
    if not_status is not None:
        q = q.where(Image.status != not_status)
    with store.session() as s:
        return list(s.scalars(q))


def last_reviewed_image(store: Store, other_than: int | None = None) -> int | None:
    """The image whose labels a person saved last (by its latest reviewed row), other than ``other_than``."""
    q = select(Annotation.image_id).where(Annotation.reviewed_at.is_not(None))
    if other_than is not None:
        q = q.where(Annotation.image_id != other_than)
    with store.session() as s:
        return s.scalars(q.order_by(Annotation.reviewed_at.desc(), Annotation.id.desc()).limit(1)).first()


def last_save(store: Store, image_id: int, after: dt.datetime | None = None) -> tuple[str, dt.datetime] | None:
    """Who saved the image's labels last in the Label tab, and when (its latest review row); None when
    nobody did (after ``after``)."""
    q = select(Review.user, Review.saved_at).where(Review.image_id == image_id)
    if after is not None:
        q = q.where(Review.saved_at >= after)
    with store.session() as s:
        row = s.execute(q.order_by(Review.saved_at.desc(), Review.id.desc()).limit(1)).first()
    return (row[0], row[1]) if row else None


def images_to_propose(store: Store) -> list[int]:
    return image_ids(store, not_status="done")


def claim_images(store: Store, worker: str, version_id: int, n: int, ttl_seconds: float,
                 order: Sequence[int] | None = None) -> list[int]:
    """Claim for ``worker``, until ``ttl_seconds`` from now, up to ``n`` images that are not done, were not yet
    proposed on by model version ``version_id``, are not claimed by another worker (an expired claim is free)
    and are not held by a person (a live db.claims claim: the image is open in their page, and new proposals
    would refuse their save), nor sent back by a reviewer (it waits for its labeler as it is). Taken in the
    order of ``order`` (the labeling queue's: most needed first; only images in it), else by id. Two workers
    never get the same image while a claim holds: on PostgreSQL the candidate rows are locked with FOR UPDATE
    SKIP LOCKED, so concurrent workers take different images without waiting; on SQLite the writing transaction
    holds the database's write lock from its start, so claims are taken one after the other. Writing the image's proposals (``write_proposals_of_images``)
    ends its claim."""
    if not worker or len(worker) > 200:
        raise UserError("a worker needs a name of 1 to 200 characters")
    now = utcnow()
    held = select(Claim.image_id).where(Claim.image_id == Image.id, Claim.until >= now).exists()
    # labels a reviewer sent back wait for their labeler as they are: new proposals would move the row version
    # on, and the verdict (and whose the image is) would no longer count
    back = select(Verdict.id).where(Verdict.image_id == Image.id, Verdict.row_version == Image.row_version,
                                    Verdict.verdict == "sent_back").exists()
    free = (Image.status != "done",
            or_(Image.proposed_version_id.is_(None), Image.proposed_version_id != version_id),
            or_(Image.claimed_until.is_(None), Image.claimed_until < now), ~held, ~back)
    n = max(0, int(n))
    with store.transaction() as s:
        postgres = s.get_bind().dialect.name == "postgresql"
        if order is None:
            chunks: Iterable[list[int] | None] = [None]
        else:  # the queue's stretches in turn, so only a stretch's candidates are locked, never the whole table
            order = list(order)
            step = max(4 * n, 200)
            chunks = (order[k:k + step] for k in range(0, len(order), step))
        ids: list[int] = []
        for chunk in chunks:
            q = select(Image.id).where(*free)
            q = q.order_by(Image.id).limit(n - len(ids)) if chunk is None else q.where(Image.id.in_(chunk))
            if postgres:
                q = q.with_for_update(skip_locked=True)
            got = set(s.scalars(q))
            ids += [i for i in chunk if i in got][:n - len(ids)] if chunk is not None else sorted(got)
            if len(ids) >= n:
                break
        if ids:
            s.execute(update(Image).where(Image.id.in_(ids))
                      .values(claimed_by=worker, claimed_until=now + dt.timedelta(seconds=ttl_seconds)))
    return ids


def proposal_progress(store: Store, version_id: int | None) -> tuple[int, int]:
    """How far the images not done are in getting proposals from model version ``version_id``: (proposed on by
    it, all not done), images the model could not use counted as done with."""
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(Image).where(Image.status != "done")) or 0
        if version_id is None:
            return 0, total
        done = s.scalar(select(func.count()).select_from(Image).where(
            Image.status != "done", Image.proposed_version_id == version_id)) or 0
    return done, total


def release_claims(store: Store, worker: str, image_ids: Iterable[int]) -> None:
    """Give back this worker's claims on these images (it could not propose on them)."""
    ids = list(image_ids)
    if ids:
        with store.transaction() as s:
            s.execute(update(Image).where(Image.id.in_(ids), Image.claimed_by == worker)
                      .values(claimed_by=None, claimed_until=None))


@dataclasses.dataclass(frozen=True)
class ReviewFilter:
    """Which saves the review queue shows: by whom (None: anyone) and saved on which days (UTC dates,
    inclusive; None: open-ended)."""

    by: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None


def queue(store: Store, which: str = QUEUE_FILTERS[0], review: ReviewFilter | None = None) -> list[int]:
    """Image ids in labeling order. The default: the images a reviewer sent back first, then every other image
    not done, in a fixed shuffled order (a hash of the id, so the order stays put as images come and go, and
    every stretch of it is a random sample). ``UNCERTAIN_FIRST``: those with proposals by uncertainty (mean
    proposal score nearest 0.5 first), then those still waiting for proposals. ``TO_REVIEW``: done images
    whose last save waits for a verdict, newest save first (``awaiting_review``, filtered by ``review``).
    Who holds which image is db.claims' (``claims.queue_for``)."""
    if which in ("new", "proposed", "in_review", "done"):
        return image_ids(store, which)
    if which == "all":
        return image_ids(store)
    if which == TO_REVIEW:
        return awaiting_review(store, review)
    todo = image_ids(store, not_status="done")
    if which != UNCERTAIN_FIRST:
        back = set(sent_back(store))
        return sorted(todo, key=lambda i: (i not in back, _shuffled(i)))
    with store.session() as s:
        means = dict(s.execute(
            select(Annotation.image_id, func.avg(Annotation.score))
            .join(Image, Image.id == Annotation.image_id)
            .where(Image.status != "done", Annotation.review_state == "proposed", Annotation.score.is_not(None))
            .group_by(Annotation.image_id)).all())
    with_props = sorted((i for i in todo if i in means), key=lambda i: (abs(means[i] - 0.5), i))
    return with_props + [i for i in todo if i not in means]


def _current_verdicts(s):
    """(image id, verdict) of verdicts given on an image's labels as they are now (its row version), oldest
    first."""
    return s.execute(select(Verdict.image_id, Verdict.verdict).join(Image, Image.id == Verdict.image_id)
                     .where(Verdict.row_version == Image.row_version).order_by(Verdict.at, Verdict.id)).all()


def awaiting_review(store: Store, review: ReviewFilter | None = None) -> list[int]:
    """Done images whose last save (a Label-tab or /label_image save, or an import asked to be reviewed) no
    reviewer approved or sent back yet, newest save first; ``review`` narrows them to one labeler or to the
    days saved. Labels imported as they are wait for nobody."""
    review = review or ReviewFilter()
    judged = select(Verdict.id).where(Verdict.image_id == Image.id, Verdict.row_version == Image.row_version)
    q = select(Image.id).where(Image.status == "done", Image.saved_at.is_not(None), ~judged.exists())
    if review.by is not None:
        q = q.where(Image.saved_by == review.by)
    if review.since is not None:
        q = q.where(Image.saved_at >= dt.datetime.combine(review.since, dt.time()))
    if review.until is not None:
        q = q.where(Image.saved_at < dt.datetime.combine(review.until + dt.timedelta(days=1), dt.time()))
    with store.session() as s:
        return list(s.scalars(q.order_by(Image.saved_at.desc(), Image.id.desc())))


def saved_since(store: Store, since: dt.datetime | None) -> int:
    """How many images were saved as done (their last save) after ``since`` (all of them when None)."""
    q = select(func.count()).select_from(Image).where(Image.status == "done", Image.saved_at.is_not(None))
    if since is not None:
        q = q.where(Image.saved_at > since)
    with store.session() as s:
        return s.scalar(q) or 0


def savers(store: Store) -> list[str]:
    """Everyone whose save waits for a verdict or ever did (the review queue's "saved by" choices), by name."""
    with store.session() as s:
        return sorted(s.scalars(select(Image.saved_by).where(Image.saved_by.is_not(None)).distinct()))


def images_matching(store: Store, *, folder: str | None = None, category_id: int | None = None,
                    status: str | None = None, ids: Iterable[int] | None = None) -> list[int]:
    """Image ids (by id) matching every filter given: file names under ``folder`` (a path prefix), holding
    an annotation (not rejected) of ``category_id``, with ``status``, among ``ids``."""
    q = select(Image.id).order_by(Image.id)
    if folder:
        prefix = folder.strip().strip("/") + "/"
        q = q.where(func.substr(Image.file_name, 1, len(prefix)) == prefix)
    if category_id is not None:
        q = q.where(select(Annotation.id).where(Annotation.image_id == Image.id, Annotation.category_id == category_id,
                                                Annotation.review_state != "rejected").exists())
    if status is not None:
        if status not in ("new", "proposed", "in_review", "done"):
            raise UserError(f"status {status!r}: one of new, proposed, in_review, done")
        q = q.where(Image.status == status)
    with store.session() as s:
        if ids is None:
            return list(s.scalars(q))
        wanted, out = sorted(set(ids)), []
        for k in range(0, len(wanted), 900):
            out += s.scalars(q.where(Image.id.in_(wanted[k:k + 900])))
        return sorted(out)


def sent_back(store: Store) -> list[int]:
    """Images a reviewer sent back whose labels nobody saved since."""
    with store.session() as s:
        latest = dict(_current_verdicts(s))  # the last verdict per image wins
        return sorted(i for i, v in latest.items() if v == "sent_back")


def sent_back_to(store: Store) -> dict[int, str | None]:
    """The images a reviewer sent back whose labels nobody saved since, each with who saved them last (to
    whom they go back)."""
    back = sent_back(store)
    out: dict[int, str | None] = {}
    with store.session() as s:
        for k in range(0, len(back), 900):
            out.update(s.execute(select(Image.id, Image.saved_by).where(Image.id.in_(back[k:k + 900]))).all())
    return out


MAX_NOTE = 2000


def give_verdict(store: Store, image_id: int, row_version: int, verdict: str, user: str, note: str = "") -> None:
    """A reviewer's verdict on the image's labels as they were at ``row_version``: ``approved``, or
    ``sent_back`` (the image goes back to the labeling queue, in review, first in line). Refused when the labels
    changed since (SaveConflict), when the image is not done, or when ``user`` saved them last (a reviewer
    judges others' work). A verdict and a save of the image are serialized: the image row is locked before
    the checks (FOR UPDATE on PostgreSQL; on SQLite the transaction holds the write lock from its start), so a
    save either lands before (and the verdict is refused) or waits until the verdict is written."""
    if verdict not in VERDICTS:
        raise UserError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
    note = note.strip() if isinstance(note, str) else ""
    if len(note) > MAX_NOTE:
        raise UserError(f"a note has at most {MAX_NOTE} characters")
    if verdict == "sent_back" and not note:
        raise UserError("say what to fix: sending labels back needs a note for the labeler")
    with store.transaction() as s:
        im = s.get(Image, image_id, with_for_update=True)
        if im is None:
            raise UserError(f"no image with id {image_id}")
        if im.row_version != row_version:
            raise SaveConflict(f"image {image_id} changed in the store since you opened it: open it again and "
                               "look at the labels as they are now; no verdict was recorded")
        if im.status != "done":
            raise UserError(f"image {image_id} is {im.status}, not done: only finished labels are reviewed")
        last = s.scalar(select(Review.user).where(Review.image_id == image_id)
                        .order_by(Review.saved_at.desc(), Review.id.desc()).limit(1))
        if last is not None and last == user:
            raise UserError(f"you ({user}) saved these labels last: another reviewer approves or sends them back")
        s.add(Verdict(image_id=image_id, row_version=row_version, verdict=verdict, note=note, user=user,
                      at=utcnow()))
        if verdict == "sent_back":  # (the row version checked again in the UPDATE itself)
            res = s.execute(update(Image).where(Image.id == image_id, Image.row_version == row_version)
                            .values(status="in_review"))
            if res.rowcount != 1:
                raise SaveConflict(f"image {image_id} changed in the store meanwhile; no verdict was recorded")


@dataclasses.dataclass(frozen=True)
class Event:
    """One line of an image's history: who did what, when (UTC). ``current``: a verdict on the labels as they
    are now."""

    at: dt.datetime
    user: str
    what: str
    current: bool = False


HISTORY_LINES = 30


def history(store: Store, image_id: int) -> list[Event]:
    """Who did what to the image, oldest first (the last HISTORY_LINES): every save in the Label tab with what
    it did to the proposals, and every reviewer's verdict."""
    with store.session() as s:
        now_version = s.scalar(select(Image.row_version).where(Image.id == image_id))
        saves = s.scalars(select(Review).where(Review.image_id == image_id)
                          .order_by(Review.saved_at.desc(), Review.id.desc()).limit(HISTORY_LINES)).all()
        verdicts = s.scalars(select(Verdict).where(Verdict.image_id == image_id)
                             .order_by(Verdict.at.desc(), Verdict.id.desc()).limit(HISTORY_LINES)).all()
    events = [Event(r.saved_at, r.user, "saved: " + _save_summary(r)) for r in saves]
    events += [Event(v.at, v.user, ("approved" if v.verdict == "approved" else "sent back")
                     + (f": {v.note}" if v.note else ""), v.row_version == now_version) for v in verdicts]
    return sorted(events, key=lambda e: e.at)[-HISTORY_LINES:]


def _save_summary(r: Review) -> str:
    parts = [f"{n} {what}" for n, what in ((r.accepted_unchanged, "accepted unchanged"),
                                           (r.accepted_edited, "accepted edited"), (r.rejected, "rejected"),
                                           (r.drawn, "drawn"), (r.assisted, "added by assist"),
                                           (r.keypoints_moved, "keypoint(s) moved")) if n]
    return (", ".join(parts) or "no change to proposals") + f" in {r.active_seconds:.0f} s"


def _shuffled(image_id: int) -> bytes:
    """The image's place in the shuffled queue: a hash of its id, unrelated to the held-out split's."""
    return hashlib.blake2b(str(image_id).encode(), digest_size=8, person=b"maskloopqueue").digest()


@dataclasses.dataclass
class LabeledImage:
    """A done image and its accepted labels; ``skipped`` names rows left out because they cannot be decoded."""

    image: ImageRecord
    instances: Instances
    skipped: list[str]


def training_label_count(store: Store) -> int:
    """How many accepted labels the training split has (done images, not held out), counted in the
    database: what ``labeled_images(store, heldout=False)`` would load, without loading it."""
    with store.session() as s:
        rows = s.execute(select(Annotation.image_id, func.count()).join(Image, Image.id == Annotation.image_id)
                         .where(Image.status == "done", Annotation.review_state == "accepted")
                         .group_by(Annotation.image_id)).all()
    return sum(n for image_id, n in rows if not is_heldout(image_id))


@dataclasses.dataclass(frozen=True)
class HeldoutSplit:
    """Where the fixed held-out split (``is_heldout``) stands, for saying what a fine-tune needs to be judged."""

    labeled: int  # held-out images done with accepted labels: what the evaluation of a fine-tune uses
    to_label: list[ImageRecord]  # the first few held-out images not done yet, by id
    images: int  # images in the store
    last_id: int  # the store's highest image id (0: none)
    next_id: int  # the first id past it that will be held out


def heldout_split(store: Store, show: int = 3) -> HeldoutSplit:
    """The held-out split as it is now: its labeled images (counted over the done images with accepted labels,
    as ``training_label_count`` counts the others) and the first ``show`` held-out images still to label
    (read by id until they are found, about five images per one shown, at most ``50 * show`` images)."""
    with store.session() as s:
        done = s.scalars(select(Annotation.image_id).join(Image, Image.id == Annotation.image_id)
                         .where(Image.status == "done", Annotation.review_state == "accepted").distinct()).all()
        to_label: list[ImageRecord] = []
        after, pages = 0, 0
        while len(to_label) < show and pages < 5:  # a page of images not done at a time, from the lowest id
            pages += 1
            page = s.scalars(select(Image).where(Image.status != "done", Image.id > after).order_by(Image.id)
                             .limit(10 * show)).all()
            to_label += [_record(im) for im in page if is_heldout(im.id)][:show - len(to_label)]
            if len(page) < 10 * show:
                break
            after = page[-1].id
        count = s.scalar(select(func.count(Image.id)))
        last = s.scalar(select(Image.id).order_by(Image.id.desc()).limit(1))  # (the next ids: an estimate)
    next_id = (last or 0) + 1
    while not is_heldout(next_id):
        next_id += 1
    return HeldoutSplit(sum(is_heldout(i) for i in done), to_label, count, last or 0, next_id)


def labeled_images(store: Store, heldout: bool) -> list[LabeledImage]:
    """Images marked done, with their accepted labels (rejected proposals are never labels; a done image's
    unlabeled area is background). ``heldout`` picks the fixed held-out split or the training split. A row
    whose segmentation is invalid is named in ``skipped`` and left out, never fatal."""
    out = []
    with store.session() as s:
        imgs = [im for im in s.scalars(select(Image).where(Image.status == "done").order_by(Image.id))
                if is_heldout(im.id) == heldout]
        by_image: dict[int, list[Annotation]] = {im.id: [] for im in imgs}
        ids = list(by_image)
        for k in range(0, len(ids), 900):
            for a in s.scalars(select(Annotation).where(Annotation.image_id.in_(ids[k:k + 900]),
                                                        Annotation.review_state == "accepted")
                               .order_by(Annotation.id)):
                by_image[a.image_id].append(a)
    for im in imgs:
        keep, skipped = [], []
        for a in by_image[im.id]:
            if a.segmentation:
                try:
                    mask_codec.check(a.segmentation, im.height, im.width)
                except mask_codec.MaskError as e:
                    skipped.append(f"annotation {a.id} (image {im.id}) is left out: {e}")
                    continue
            keep.append(a)
        out.append(LabeledImage(_record(im), Instances.from_rows(keep, im.height, im.width), skipped))
    return out


@dataclasses.dataclass
class Page:
    """One page of images with their shown (not rejected) annotation rows."""

    images: list[ImageRecord]
    annotations: dict[int, list]  # per image: its rows (the DRAWN_COLUMNS of each, by id)
    page: int  # 1-based, clamped to the pages there are
    pages: int


DRAWN_COLUMNS = (Annotation.id, Annotation.image_id, Annotation.category_id, Annotation.segmentation,
                 Annotation.bbox, Annotation.area, Annotation.iscrowd, Annotation.keypoints, Annotation.num_keypoints,
                 Annotation.source, Annotation.score, Annotation.review_state, Annotation.extra)


def page_of_images(store: Store, page: int, page_size: int) -> Page:
    """Images by id, page ``page``; only that page's images and their annotations are read."""
    with store.session() as s:
        total = s.scalar(select(func.count()).select_from(Image)) or 0
        pages = max(1, -(-total // page_size))
        page = min(max(1, int(page or 1)), pages)
        imgs = [_record(im) for im in
                s.scalars(select(Image).order_by(Image.id).offset((page - 1) * page_size).limit(page_size))]
        anns: dict[int, list] = {im.id: [] for im in imgs}
        # what is drawn, not the whole row (no proposal-as-made copy, no bookkeeping): a page may hold an
        # image with tens of thousands of annotations
        for a in s.execute(select(*DRAWN_COLUMNS).where(Annotation.image_id.in_(list(anns)),
                                                        Annotation.review_state != "rejected").order_by(Annotation.id)):
            anns[a.image_id].append(a)
    return Page(imgs, anns, page, pages)


def annotations_per_category(store: Store) -> dict[int, int]:
    with store.session() as s:
        return dict(s.execute(select(Annotation.category_id, func.count()).group_by(Annotation.category_id)).all())


def keypoint_examples(store: Store, category_id: int, limit: int = 200) -> list[tuple[list, list]]:
    """(bbox xywh, keypoints) of the category's latest accepted annotations that have keypoints placed, at most
    ``limit`` (a skeleton template is laid out from them: annotator.skeleton)."""
    with store.session() as s:
        rows = s.execute(select(Annotation.bbox, Annotation.keypoints)
                         .where(Annotation.category_id == category_id, Annotation.review_state == "accepted",
                                Annotation.num_keypoints > 0)
                         .order_by(Annotation.id.desc()).limit(limit)).all()
    return [(list(b), list(k)) for b, k in rows if b and k]
