"""The label view's queue (the picture and the instance list are drawn in the browser: annotator/canvas.py)."""

from __future__ import annotations

from db import annotations
from db.store import Store


QUEUE_FILTERS = annotations.QUEUE_FILTERS


def queue(store: Store, which: str = QUEUE_FILTERS[0]) -> list[int]:
    """Image ids in labeling order (db.annotations.queue)."""
    return annotations.queue(store, which)


def neighbour(ids: list[int], current: int | None, step: int) -> int | None:
    if not ids:
        return None
    if current not in ids:
        return ids[0] if step > 0 else ids[-1]
    k = ids.index(current) + step
    return ids[k] if 0 <= k < len(ids) else None
