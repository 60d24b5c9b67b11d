"""The label view's instance list and queue (the picture is drawn in the browser: annotator/canvas.py)."""

from __future__ import annotations

from annotator.labeling import LabelSession
from db import annotations
from db.store import Store


def instance_rows(ls: LabelSession, min_score: float = 0.0) -> list[list]:
    rows = []
    for i in ls.visible(min_score):
        it = ls.instances[i]
        name = ls.categories[it.category_id].name if it.category_id in ls.categories else str(it.category_id)
        kp = ""
        if it.keypoints:
            kp = f"{ls.instances.num_keypoints_of(i)}/{len(it.keypoints) // 3}"
        rows.append([i, name, "" if it.score is None else round(it.score, 3), it.source,
                     it.state + (" (edited)" if it.edited else ""), kp])
    return rows


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
