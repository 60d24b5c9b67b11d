"""Who holds which image, so that a team never labels the same image twice: claims and assignments.

- A **claim** (``Claim``) is taken when an image is handed to a person: by the labeling or review queue (Next,
  the page's first image), by ``/next_images``, or when they open an image nobody holds. It lasts ``ttl``
  seconds and is renewed while their page is open (annotator.label_tab: the canvas's presence poll); it ends when
  they save the image as done, move on to another one, close the page or log out, or when it expires. While
  it holds, the queues hand the image to nobody else, and no background proposal run replaces its proposals
  (db.annotations.claim_images).
- An **assignment** (``Assignment``) is an admin's: the image is for that person only; the queues hand it to
  nobody else, and to them before the rest. It stays until the admin takes it back (``unassign``).

A claim is one row per image. ``take`` hands out the first free images of a list, in the list's order, and is
safe with any number of people at once: on PostgreSQL each candidate's image row is locked with ``FOR UPDATE
SKIP LOCKED`` (two people never wait on each other: the second passes over the image the first is taking)
and the claim row is checked again under that lock; on SQLite the writing transaction holds the database's
write lock from its start, so takes happen one after the other. Who holds is a name: the login (the same
person in two tabs holds the same images).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Iterable, Sequence

from sqlalchemy import case, delete, func, insert, or_, select, update

from db import annotations
from db.errors import UserError
from db.schema import Assignment, Claim, Image, Verdict, utcnow
from db.store import Store

PAGE_SECONDS = 300.0  # a page's claim without a sign of life (its presence poll renews it every minute)
API_SECONDS = 900.0  # a claim handed out by /next_images (no page to renew it)
RENEW_EVERY = 60.0  # seconds between renewals of a page's claim
MAX_PER_PERSON = 20  # live claims one person may hold: nobody takes the whole queue (their own are renewed)
CHUNK = 200  # candidates read per query
MAX_NAME = 200


def _name(who: str) -> str:
    if not isinstance(who, str) or len(who) > MAX_NAME:
        raise UserError(f"a claim needs a holder's name of at most {MAX_NAME} characters")
    return who


def held_by_others(store: Store, who: str, *, assigned: bool = True) -> set[int]:
    """The images someone other than ``who`` holds now: a live claim, or (``assigned``) an assignment."""
    now = utcnow()
    with store.session() as s:
        held = set(s.scalars(select(Claim.image_id).where(Claim.user != who, Claim.until >= now)))
        if assigned:
            held |= set(s.scalars(select(Assignment.image_id).where(Assignment.user != who)))
    return held


def assigned_to(store: Store, who: str) -> set[int]:
    with store.session() as s:
        return set(s.scalars(select(Assignment.image_id).where(Assignment.user == who)))


LABELING = tuple(annotations.QUEUE_FILTERS[:2])  # the queues that hand out images to label


def queue_for(store: Store, who: str, which: str = annotations.QUEUE_FILTERS[0],
              review: annotations.ReviewFilter | None = None) -> list[int]:
    """The queue ``which`` (db.annotations.queue) as handed to ``who``: in the queues to label, the images
    assigned to them come first (after the ones sent back to them) and the images someone else holds (a live
    claim, an assignment, labels of theirs a reviewer sent back) are left out; in the review queue, those someone else has open are left out. The
    status views ("new", ..., "all") show every image."""
    ids = annotations.queue(store, which, review)
    if which in LABELING:
        others, mine = held_by_others(store, who), assigned_to(store, who)
        # labels sent back go back to whoever saved them (unless an admin assigned the image to someone)
        back = annotations.sent_back_to(store)
        others |= {i for i, saver in back.items() if saver not in (None, who) and i not in mine}
        first = set(back) if which == LABELING[0] else set()
        return sorted((i for i in ids if i not in others), key=lambda i: 0 if i in first else 1 if i in mine else 2)
    if which == annotations.TO_REVIEW:
        others = held_by_others(store, who, assigned=False)
        return [i for i in ids if i not in others]
    return ids


def still_in(which: str) -> tuple:
    """What an image must still be, when it is handed out, to belong to the queue ``which`` (the list was read
    a moment before: another person may have finished it, or a reviewer judged it, since)."""
    if which in LABELING:
        return (Image.status != "done",)
    if which == annotations.TO_REVIEW:
        judged = select(Verdict.id).where(Verdict.image_id == Image.id, Verdict.row_version == Image.row_version)
        return (Image.status == "done", Image.saved_at.is_not(None), ~judged.exists())
    return ()


def take(store: Store, who: str, candidates: Sequence[int], ttl: float, n: int = 1, *,
         assigned: bool = True, where: Sequence = ()) -> list[int]:
    """Claim for ``who``, for ``ttl`` seconds, the first ``n`` images of ``candidates`` (in that order) that
    nobody else holds (a live claim, or with ``assigned`` an assignment to someone else), that no proposal
    worker is proposing on right now (its new proposals would refuse their save), and that still meet
    ``where`` (conditions on Image, e.g. ``still_in(queue)``); an image ``who`` holds already counts as free
    (its claim is renewed). One person holds at most MAX_PER_PERSON images at once. Returns the images claimed, in ``candidates``' order; fewer than ``n`` when the list
    runs out. Images gone from the store are passed over."""
    who = _name(who)
    out: list[int] = []
    ids = list(dict.fromkeys(int(i) for i in candidates))
    with store.session() as s:
        mine = set(s.scalars(select(Claim.image_id).where(Claim.user == who, Claim.until >= utcnow())))
    room = MAX_PER_PERSON - len(mine)  # new claims this person may still take
    for k in range(0, len(ids), CHUNK):
        if len(out) >= n:
            break
        chunk = ids[k:k + CHUNK]
        with store.transaction() as s:
            postgres = s.get_bind().dialect.name == "postgresql"
            now = utcnow()
            blocked = set(s.scalars(select(Claim.image_id).where(Claim.image_id.in_(chunk), Claim.user != who,
                                                                Claim.until >= now)))
            if assigned:
                blocked |= set(s.scalars(select(Assignment.image_id).where(Assignment.image_id.in_(chunk),
                                                                          Assignment.user != who)))
            for image_id in chunk:
                if image_id in blocked or (image_id not in mine and room <= 0):
                    continue
                lock = select(Image.id).where(Image.id == image_id, *where,
                                              or_(Image.claimed_until.is_(None), Image.claimed_until < now))
                if postgres:  # another person taking this image right now: pass over it, never wait
                    lock = lock.with_for_update(skip_locked=True, key_share=True)
                    # (FOR NO KEY UPDATE: a row that a new claim or review row only refers to is not passed over)
                if s.scalar(lock) is None:
                    continue
                if postgres:  # under the lock: a claim committed since the read above counts
                    holder = s.execute(select(Claim.user, Claim.until).where(Claim.image_id == image_id)).first()
                    if holder is not None and holder.user != who and holder.until >= now:
                        continue
                _put(s, image_id, who, now, ttl)
                room -= image_id not in mine
                out.append(image_id)
                if len(out) >= n:
                    break
    return out


def _put(s, image_id: int, who: str, now: dt.datetime, ttl: float) -> None:
    until = now + dt.timedelta(seconds=ttl)
    res = s.execute(update(Claim).where(Claim.image_id == image_id).values(user=who, until=until, at=now))
    if res.rowcount == 0:
        s.execute(insert(Claim).values(image_id=image_id, user=who, until=until, at=now))


def renew(store: Store, who: str, image_ids: Iterable[int], ttl: float) -> int:
    """Extend ``who``'s live claims on these images to ``ttl`` seconds from now (an expired one is not
    renewed: someone else may hold the image since). How many were renewed."""
    ids = sorted(set(image_ids))
    if not ids:
        return 0
    now = utcnow()
    with store.transaction() as s:
        res = s.execute(update(Claim).where(Claim.image_id.in_(ids), Claim.user == who, Claim.until >= now)
                        .values(until=now + dt.timedelta(seconds=ttl)))
        return res.rowcount


def release(store: Store, who: str, image_ids: Iterable[int] | None = None) -> int:
    """End ``who``'s claims on these images (all of them when None); others' claims stay. How many ended."""
    q = delete(Claim).where(Claim.user == who)
    if image_ids is not None:
        ids = sorted(set(image_ids))
        if not ids:
            return 0
        q = q.where(Claim.image_id.in_(ids))
    with store.transaction() as s:
        return s.execute(q).rowcount


@dataclasses.dataclass(frozen=True)
class Holder:
    user: str
    until: dt.datetime | None  # None: an assignment
    assigned: bool

    @property
    def how(self) -> str:
        return "assigned to" if self.assigned else "handed to"

    @property
    def until_text(self) -> str:
        return "" if self.until is None else f" until {self.until:%H:%M} UTC unless they keep working on it"


def holder(store: Store, image_id: int, other_than: str | None = None) -> Holder | None:
    """Who holds the image now (a live claim first, else an assignment), unless it is ``other_than``."""
    now = utcnow()
    with store.session() as s:
        c = s.execute(select(Claim.user, Claim.until).where(Claim.image_id == image_id, Claim.until >= now)).first()
        if c is not None and c.user != other_than:
            return Holder(c.user, c.until, False)
        a = s.scalar(select(Assignment.user).where(Assignment.image_id == image_id))
    return Holder(a, None, True) if a is not None and a != other_than else None


def assign(store: Store, user: str, image_ids: Iterable[int], by: str) -> int:
    """Hand these images to ``user`` (replacing any assignment to someone else); how many. Images that do not
    exist are refused by name, and nothing is assigned."""
    user = _name(user)
    if not user.strip():
        raise UserError("assign to whom? give a user name")
    from db import users

    if users.count(store) and users.role_of(store, user) is None:  # with logins: only to an account
        raise UserError(f"no account named {user!r} (app.py user list); nothing assigned")
    ids = sorted(set(int(i) for i in image_ids))
    now = utcnow()
    with store.transaction() as s:
        found: set[int] = set()
        for k in range(0, len(ids), 900):
            found |= set(s.scalars(select(Image.id).where(Image.id.in_(ids[k:k + 900]))))
        missing = [i for i in ids if i not in found]
        if missing:
            raise UserError(f"no image with id {', '.join(map(str, missing[:10]))}"
                            + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "") + "; nothing assigned")
        for k in range(0, len(ids), 900):
            s.execute(delete(Assignment).where(Assignment.image_id.in_(ids[k:k + 900])))
        if ids:
            s.execute(insert(Assignment), [dict(image_id=i, user=user, by=by, at=now) for i in ids])
    return len(ids)


def unassign(store: Store, image_ids: Iterable[int] | None = None, user: str | None = None) -> int:
    """Take back assignments: of these images, or of this user's, or (both None) all; how many."""
    q = delete(Assignment)
    if user is not None:
        q = q.where(Assignment.user == user)
    with store.transaction() as s:
        if image_ids is None:
            return s.execute(q).rowcount
        ids, n = sorted(set(image_ids)), 0
        for k in range(0, len(ids), 900):
            n += s.execute(q.where(Assignment.image_id.in_(ids[k:k + 900]))).rowcount
        return n


@dataclasses.dataclass(frozen=True)
class PersonHolds:
    """What one person holds now: ``claimed`` (live claims, a few ids), ``assigned`` and ``assigned_done``."""

    user: str
    claimed: int
    claimed_ids: list[int]
    assigned: int
    assigned_done: int


def who_holds_what(store: Store, shown: int = 5) -> list[PersonHolds]:
    """Per person, by name: their live claims (the first ``shown`` ids) and their assignments (and how many of
    those are done)."""
    now = utcnow()
    with store.session() as s:
        claims = s.execute(select(Claim.user, Claim.image_id).where(Claim.until >= now)
                           .order_by(Claim.user, Claim.at)).all()
        assigned = s.execute(select(Assignment.user, func.count(),
                                    func.sum(case((Image.status == "done", 1), else_=0)))
                             .join(Image, Image.id == Assignment.image_id).group_by(Assignment.user)).all()
    by: dict[str, list[int]] = {}
    for user, image_id in claims:
        by.setdefault(user, []).append(image_id)
    counts = {u: (n, int(d or 0)) for u, n, d in assigned}
    return [PersonHolds(u, len(by.get(u, [])), by.get(u, [])[:shown], *counts.get(u, (0, 0)))
            for u in sorted(set(by) | set(counts))]



MAX_LISTED_IDS = 100_000


def parse_ids(text: str | None) -> list[int] | None:
    """Image ids as typed: ``3, 5 9-12`` (commas or spaces, ranges inclusive); None when blank. UserError
    naming the part that is not an id or a range."""
    if text is None or not str(text).strip():
        return None
    out: list[int] = []
    for part in str(text).replace(",", " ").split():
        first, sep, last = part.partition("-")
        try:
            a, b = int(first), int(last) if sep else int(first)
        except ValueError:
            raise UserError(f"image ids: {part!r} is neither an id nor a range like 5-9") from None
        if a < 1 or b < a:
            raise UserError(f"image ids: {part!r} is not a range of positive ids, lowest first")
        if len(out) + (b - a + 1) > MAX_LISTED_IDS:
            raise UserError(f"image ids: at most {MAX_LISTED_IDS} at once")
        out.extend(range(a, b + 1))
    return out


def matching(store: Store, *, folder: str | None = None, category: str | None = None, status: str | None = None,
             ids: str | None = None) -> list[int]:
    """The images a filter as typed picks (db.annotations.images_matching): a folder (path prefix), a category
    (its name or id), a status, image ids (``parse_ids``); blank parts pick everything. UserError names an
    unknown category."""
    from db.schema import Category

    cat_id = None
    if category is not None and str(category).strip():
        name = str(category).strip()
        with store.session() as s:
            cat_id = s.scalar(select(Category.id).where(Category.name == name))
            if cat_id is None and name.isdigit():
                cat_id = s.scalar(select(Category.id).where(Category.id == int(name)))
        if cat_id is None:
            raise UserError(f"no category named {name!r}")
    return annotations.images_matching(store, folder=(folder or "").strip() or None, category_id=cat_id,
                                       status=(status or "").strip() or None, ids=parse_ids(ids))


def holds_lines(store: Store) -> list[str]:
    """Who holds what, as lines (app.py assign --list)."""
    rows = who_holds_what(store)
    if not rows:
        return ["nobody holds or is assigned any image"]
    return [f"{h.user}: {h.claimed} open" + (f" ({', '.join(map(str, h.claimed_ids))}"
                                              + (", ..." if h.claimed > len(h.claimed_ids) else "") + ")"
                                              if h.claimed else "")
            + f", {h.assigned} assigned ({h.assigned_done} done)" for h in rows]
