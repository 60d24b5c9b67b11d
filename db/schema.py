"""Database schema (SQLAlchemy 2.0 ORM).

Conventions (the data contract for every other package):
- ``Category.id``, ``Image.id`` and ``Annotation.id`` are COCO ids, kept as given on import.
- ``Annotation.bbox`` is COCO xywh (a JSON list of 4 numbers), never xyxy.
- ``Annotation.segmentation`` is COCO: a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` or a compressed
  RLE ``{"size": [h, w], "counts": str}`` (column-major, as pycocotools writes it).
- ``Annotation.keypoints`` is the flat COCO list ``[x, y, v] * K`` in the category's keypoint order.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

IMAGE_STATUSES = ("new", "proposed", "in_review", "done")
REVIEW_STATES = ("proposed", "accepted", "rejected")
ROLES = ("labeler", "reviewer", "admin")  # each may do what the one before it may, and more (db/users.py)
VERDICTS = ("approved", "sent_back")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class JsonNumber(TypeDecorator):
    """A number kept exactly as given: an int stays an int and a float stays a float (stored as its JSON
    text, because SQLite's numeric affinity would turn 50.0 into 50)."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value, allow_nan=False)

    def process_result_value(self, value, dialect):
        if value is None or isinstance(value, (int, float)):
            return value
        return json.loads(value)


class FiniteFloat(TypeDecorator):
    """A float column that refuses NaN and infinities instead of storing them (SQLite would store NULL)."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return value


# COCO ids: 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the 64-bit rowid, which allocates
# new ids itself. Ids given on import must lie in 1..MAX_ID: JSON readers that hold numbers as doubles
# (browsers, JavaScript, many COCO tools) read larger ones wrongly.
IdType = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2 ** 53 - 1


def text_problem(column, value: str) -> str | None:
    """Why the string ``value`` cannot be stored in the String ``column`` (e.g. ``Category.name``) alike on every
    database, or None when it can. PostgreSQL refuses what SQLite would store: more characters than the
    column's length, and a NUL; a lone surrogate (``"\\ud800"``) has no UTF-8 form, so neither database (nor
    an exported file) can hold it. One answer on both databases, checked before writing."""
    limit = getattr(column, "type", column).length
    if limit is not None and len(value) > limit:
        return f"is {len(value)} characters long, over the store's limit of {limit}"
    if "\x00" in value:
        return "holds a NUL character"
    if unicode_problem(value):
        return unicode_problem(value)
    return None


def unicode_problem(value: str) -> str | None:
    """Why ``value`` has no UTF-8 form (a lone surrogate, which Python's json reader accepts from ``\\ud800``),
    or None."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (an escape like \\ud800 that stands for no character)"
    return None


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    supercategory: Mapped[str] = mapped_column(String(200), default="")
    keypoints: Mapped[Optional[list[Any]]] = mapped_column(JSON, nullable=True)
    skeleton: Mapped[Optional[list[Any]]] = mapped_column(JSON, nullable=True)

    annotations: Mapped[list["Annotation"]] = relationship(back_populates="category")


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    file_name: Mapped[str] = mapped_column(String(1000), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    media_path: Mapped[str] = mapped_column(String(300))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="new", index=True)
    # The one optimistic lock on an image's labels: moved on by every write that changes them (save, proposals,
    # import onto the image), compared by db.annotations.save_review. Bumped by hand in those writes, not by
    # the ORM, so that every writer (Core statements included) follows the same rule.
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    extra: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # Proposal workers (app.py propose --worker): the model version that last proposed on the image, and
    # which worker holds it until when (db.annotations.claim_images); an expired claim is free again.
    proposed_version_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    claimed_by: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    claimed_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    # Why the model could not use the image the last time it tried (an odd shape, an unreadable file), and when;
    # None when no problem is known. Written by db.annotations.record_problems when a proposal run, a worker,
    # assist, a fine-tune or an evaluation skips the image; cleared when the image is used successfully again.
    problem: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    problem_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    # The save that waits for a reviewer's verdict: who and when (a Label-tab or /label_image save, or an import
    # asked to be reviewed: import-coco --needs-review); None when nobody needs to review the labels (a plain
    # import). The review queue (db.annotations.awaiting_review) is the done images with a save and no verdict
    # on their labels as they are now, newest save first.
    saved_by: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    saved_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True, index=True)

    annotations: Mapped[list["Annotation"]] = relationship(
        back_populates="image", cascade="all, delete-orphan", order_by="Annotation.id"
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_versions.id"), nullable=True)
    size: Mapped[str] = mapped_column(String(20))
    checkpoint: Mapped[Optional[str]] = mapped_column(String(1000), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    images_used: Mapped[int] = mapped_column(Integer, default=0)
    train_seconds: Mapped[float] = mapped_column(FiniteFloat, default=0.0)
    loss_curve: Mapped[Optional[list[Any]]] = mapped_column(JSON, nullable=True)
    metrics: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    parent_metrics: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    category_map: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    # at most one active version, whoever writes one (a unique index over the active rows alone): a second
    # one is refused by the database, not left to every writer's care
    __table_args__ = (
        Index("uq_model_versions_one_active", "is_active", unique=True, sqlite_where=text("is_active"),
              postgresql_where=text("is_active")),
    )


class Annotation(Base):
    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id", ondelete="CASCADE"))
    category_id: Mapped[int] = mapped_column(IdType, ForeignKey("categories.id"))
    segmentation: Mapped[Optional[Any]] = mapped_column(JSON, nullable=True)
    bbox: Mapped[list[Any]] = mapped_column(JSON)
    area: Mapped[Any] = mapped_column(JsonNumber)
    iscrowd: Mapped[int] = mapped_column(Integer, default=0)
    keypoints: Mapped[Optional[list[Any]]] = mapped_column(JSON, nullable=True)
    num_keypoints: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(10), default="human")  # "model", "human" or "assist"
    score: Mapped[Optional[float]] = mapped_column(FiniteFloat, nullable=True)
    model_version_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("model_versions.id"), nullable=True
    )
    review_state: Mapped[str] = mapped_column(String(10), default="accepted")
    # The proposal as the model made it, kept when a person edits or accepts it, so that the
    # correction effort per model version can be measured (share accepted unchanged, IoU).
    original: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    extra: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    reviewed_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    reviewed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)

    image: Mapped[Image] = relationship(back_populates="annotations")
    category: Mapped[Category] = relationship(back_populates="annotations")

    __table_args__ = (
        Index("ix_annotations_image_id", "image_id"),
        Index("ix_annotations_category_id", "category_id"),
        Index("ix_annotations_review_state", "review_state"),
    )


class Review(Base):
    """One save of an image's labels in the Label tab: what the labeler did to the proposals they were shown
    (the proposal as made against the label as saved) and how long they worked on it. The per-version review
    measures of the model view are sums of these rows (db.stats.review_stats)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id", ondelete="CASCADE"), index=True)
    # the version whose proposals were reviewed (the one most of the image's proposals came from); None
    # when there were none
    model_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_versions.id"), nullable=True,
                                                            index=True)
    user: Mapped[str] = mapped_column(String(200), default="")
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime)
    saved_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # from opening (or the last save) to this save, gaps of over annotator.labeling.IDLE_GAP between two
    # actions left out
    active_seconds: Mapped[float] = mapped_column(FiniteFloat, default=0.0)
    actions: Mapped[int] = mapped_column(Integer, default=0)
    proposals: Mapped[int] = mapped_column(Integer, default=0)  # proposals reviewed in this save
    accepted_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    accepted_edited: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    drawn: Mapped[int] = mapped_column(Integer, default=0)  # instances added from nothing
    assisted: Mapped[int] = mapped_column(Integer, default=0)  # instances added by box or point assist
    keypoints_moved: Mapped[int] = mapped_column(Integer, default=0)  # of accepted proposals
    iou_sum: Mapped[float] = mapped_column(FiniteFloat, default=0.0)  # mask IoU proposal -> saved, summed
    iou_count: Mapped[int] = mapped_column(Integer, default=0)


class Verdict(Base):
    """A reviewer's verdict on an image's labels as they were at ``row_version`` (Image.row_version): approved,
    or sent back to the labeling queue with a note. A later save moves the row version on, so the image waits
    for review again."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id", ondelete="CASCADE"), index=True)
    row_version: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    user: Mapped[str] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class User(Base):
    """An account for the login: its role (ROLES) and its password as a KDF hash (db/users.py), never the
    password itself."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(12), default="queued", index=True)
    progress: Mapped[float] = mapped_column(FiniteFloat, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    detail: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pid: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    host: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    # Written every few seconds by the process doing the job; an active job whose heartbeat is older than
    # db.jobs.STALE_AFTER is failed, whatever its pid (pids are reused, and the process may be elsewhere).
    heartbeat_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    result_version_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("model_versions.id"), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Claim(Base):
    """A person holds an image they were handed (the labeling or review queue, /next_images, or an image they
    opened that nobody held) until ``until``; while it holds, nobody else is handed the image and no background
    proposal run replaces its proposals. Renewed while the person's page is open, ended when they save it,
    move on or close the page (db/claims.py)."""

    __tablename__ = "claims"

    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    until: Mapped[dt.datetime] = mapped_column(DateTime)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Assignment(Base):
    """An admin handed the image to ``user``: the queues hand it to nobody else (db/claims.py)."""

    __tablename__ = "assignments"

    image_id: Mapped[int] = mapped_column(IdType, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    by: Mapped[str] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Setting(Base):
    """One of the store's own settings, by key (db/settings.py)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)


class DatasetMeta(Base):
    """COCO top-level ``info`` and ``licenses`` as imported, so exports carry them unchanged."""

    __tablename__ = "dataset_meta"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
