"""What the label view shows: the composed picture at display scale, the instance table, the queue."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image as PILImage, ImageDraw

from annotator.labeling import LabelSession
from annotator.render import display_crop, draw_instances
from db import annotations
from db.store import Store

MAX_DISPLAY = 1600  # long side of the picture sent to the browser; masks stay full resolution
MIN_DISPLAY = 768  # small images are enlarged (nearest neighbour) so pixels can be clicked


def display_scale(ls: LabelSession) -> float:
    long_side = max(ls.width, ls.height)
    return min(MAX_DISPLAY, max(MIN_DISPLAY, long_side)) / long_side


def _small(ls: LabelSession, scale: float) -> np.ndarray:
    cache = ls.display_cache.get("picture")
    if cache is None or cache[0] != scale:
        pix = ls.pixels
        if scale != 1.0:
            w, h = max(1, round(ls.width * scale)), max(1, round(ls.height * scale))
            pix = np.asarray(PILImage.fromarray(pix).resize((w, h), PILImage.BILINEAR if scale < 1 else PILImage.NEAREST))
        cache = (scale, pix)
        ls.display_cache["picture"] = cache
    return cache[1]




def _display_mask(ls: LabelSession, mask: np.ndarray | None, scale: float, h: int, w: int):
    """render.display_crop, cached on the session per mask array, so only masks that changed are scaled
    again (edits assign new arrays)."""
    if mask is None:
        return None
    cache = ls.display_cache.setdefault("masks", {})
    key = (id(mask), scale)
    hit = cache.get(key)
    if hit is not None and hit[0] is mask:
        return hit[1]
    result = display_crop(mask, scale, h, w)
    if len(cache) > 2 * len(ls.instances) + 64:  # drop crops of masks that edits replaced
        cache.clear()
    cache[key] = (mask, result)
    return result


def compose(ls: LabelSession, min_score: float = 0.0, pending: Sequence[tuple[float, float]] = ()) -> np.ndarray:
    """The image with every shown instance (render.draw_instances: the gallery's renderer too), tagged
    "#index class [score]", the selected instance highlighted, and pending polygon/box points."""
    scale = display_scale(ls)
    base = _small(ls, scale)
    h, w = base.shape[:2]
    inst = ls.instances
    shown = [i for i in ls.visible(min_score) if inst.states[i] != "rejected"]

    def tag(i: int) -> str:
        cid = inst.category_ids[i]
        name = ls.categories[cid].name if cid in ls.categories else str(cid)
        score = inst.scores[i]
        return f"#{i} {name}" + (f" {score:.2f}" if score is not None and inst.states[i] == "proposed" else "")

    def skeleton(i: int):
        cid = inst.category_ids[i]
        return ls.categories[cid].skeleton if cid in ls.categories else []

    pil = draw_instances(base, inst, scale, shown, tag=tag, skeleton=skeleton, selected=ls.selected,
                         crop=lambda i: _display_mask(ls, inst.mask(i), scale, h, w))
    d = ImageDraw.Draw(pil)
    for n, (px, py) in enumerate(pending):
        d.ellipse([px * scale - 3, py * scale - 3, px * scale + 3, py * scale + 3], fill=(255, 255, 0))
        if n:
            qx, qy = pending[n - 1]
            d.line([(qx * scale, qy * scale), (px * scale, py * scale)], fill=(255, 255, 0), width=1)
    return np.asarray(pil)


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


PAINT_RGBA = (255, 0, 255, 255)


def paint_canvas(ls: LabelSession) -> dict:
    """The paint canvas's full value: the picture as background and the selected mask as the one layer
    (magenta, opaque), both at display scale. Always the whole dict (gradio's layer duplication bugs)."""
    scale = display_scale(ls)
    base = _small(ls, scale)
    h, w = base.shape[:2]
    layer = np.zeros((h, w, 4), np.uint8)
    if ls.selected is not None:
        crop = _display_mask(ls, ls.instances[ls.selected].mask, scale, h, w)
        if crop is not None:
            (y0, x0), small = crop
            layer[y0:y0 + small.shape[0], x0:x0 + small.shape[1]][small] = PAINT_RGBA
    background = np.dstack([base, np.full((h, w), 255, np.uint8)])
    return {"background": background, "layers": [layer], "composite": None}


def mask_from_canvas(ls: LabelSession, value: dict | None) -> np.ndarray:
    """The painted layer's alpha, back at full resolution (nearest neighbour)."""
    if not value or not value.get("layers"):
        from db.errors import UserError

        raise UserError("load the selected mask into the paint canvas first")
    layer = np.asarray(value["layers"][0])
    painted = layer[..., 3] > 127 if layer.ndim == 3 and layer.shape[2] == 4 else layer > 0
    if painted.ndim == 3:
        painted = painted.any(axis=2)
    img = PILImage.fromarray(painted.astype(np.uint8) * 255).resize((ls.width, ls.height), PILImage.NEAREST)
    return np.asarray(img) > 127
