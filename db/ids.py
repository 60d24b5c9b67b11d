"""Ids the database allocates, and ids given from outside (COCO import) checked against one rule.

New images, annotations and categories get their id from the database (SQLite's rowid, PostgreSQL's
sequence), never from ``max(id) + 1`` in Python. Ids given in a COCO file are kept as given; afterwards
PostgreSQL's sequence is moved past them, so the next allocated id cannot collide.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.schema import MAX_ID


def id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a COCO id here (None when it can): one rule for images, annotations and
    categories."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "missing or not an integer"
    if not 1 <= value <= MAX_ID:
        return f"{value} is outside 1..{MAX_ID} (ids are positive and must survive JSON readers)"
    return None


def advance_sequences(s: Session, *tables: str) -> None:
    """After rows with given ids were inserted: on PostgreSQL, move each table's id sequence past its
    largest id (never backwards, so ids handed out meanwhile stay unique). SQLite needs nothing."""
    if s.get_bind().dialect.name != "postgresql":
        return
    for table in tables:
        s.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                       f"GREATEST((SELECT COALESCE(MAX(id), 1) FROM {table}), "
                       f"nextval(pg_get_serial_sequence('{table}', 'id'))))"))
