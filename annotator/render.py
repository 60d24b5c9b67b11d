"""Drawing instances over an image: masks in distinct colours, boxes, class names, keypoints joined by
their skeleton, and the selected instance highlighted."""

from __future__ import annotations

import colorsys
import dataclasses
import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from db import masks as mask_codec

DRAW_REACH = 4  # boxes and keypoints further than this many image sizes away are not drawable


@dataclasses.dataclass
class Shown:
    """One instance as drawn: mask (H, W) bool or None, box xywh, label text, keypoints flat or None."""

    mask: np.ndarray | None
    bbox: Sequence[float]
    label: str
    keypoints: Sequence[float] | None = None
    skeleton: Sequence[Sequence[int]] | None = None
    dashed: bool = False  # proposals are drawn dashed


def color(i: int) -> tuple[int, int, int]:
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


class CannotDraw(ValueError):
    """One annotation row that cannot be drawn; the message names it and says why."""


def shown_from_annotation(ann: Any, height: int, width: int, label: str, category: Any = None) -> Shown:
    """An annotation row as drawn. Raises CannotDraw (naming the annotation id) for a row whose
    segmentation, box or keypoints cannot be drawn, so a caller can show everything else."""
    try:
        seg = ann.segmentation
        m = mask_codec.decode(seg, height, width) if seg else None
        if m is not None and m.shape != (height, width):
            raise ValueError(f"its mask is {m.shape[1]}x{m.shape[0]}, the image {width}x{height}")
        bbox = _coordinates(ann.bbox, height, width, step=2)
        if len(bbox) != 4:
            raise ValueError(f"bbox has {len(bbox)} values, not 4")
        keypoints = _coordinates(ann.keypoints, height, width, step=3) if ann.keypoints else None
    except Exception as e:  # any bad value in one row: that row is named, the view goes on
        raise CannotDraw(f"annotation {ann.id} cannot be drawn: {e}") from e
    return Shown(mask=m, bbox=bbox, label=label, keypoints=keypoints,
                 skeleton=(category.skeleton if category is not None else None),
                 dashed=ann.review_state == "proposed")


def _coordinates(values: Sequence[float], height: int, width: int, step: int) -> list[float]:
    """``values`` as floats, refusing x, y pairs (every ``step`` values) that are not finite or lie more
    than DRAW_REACH image sizes away (PIL cannot draw them)."""
    out = [float(v) for v in values]
    reach = DRAW_REACH * max(height, width, 1)
    for k in range(0, len(out) - 1, step):
        if not all(math.isfinite(v) and abs(v) <= reach for v in out[k:k + 2]):
            raise ValueError(f"coordinate {out[k:k + 2]} is not finite or lies far outside the image")
    return out


def draw(image: np.ndarray, items: Sequence[Shown], selected: int | None = None, scale: float = 1.0,
         alpha: float = 0.45) -> np.ndarray:
    """``image`` HxWx3 uint8 (already at display scale ``scale`` of the masks' resolution)."""
    out = image.astype(np.float32).copy()
    H, W = out.shape[:2]
    for i, it in enumerate(items):
        if it.mask is None:
            continue
        m = it.mask if scale == 1.0 else _resize_mask(it.mask, W, H)
        a = 0.65 if i == selected else alpha
        out[m] = out[m] * (1 - a) + np.array(color(i), np.float32) * a
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    for i, it in enumerate(items):
        c = color(i)
        x, y, w, h = (v * scale for v in it.bbox)
        width = 3 if i == selected else 1
        if it.dashed:
            _dashed_rect(d, x, y, x + w, y + h, c, width)
        else:
            d.rectangle([x, y, x + w, y + h], outline=c, width=width)
        d.text((x + 2, max(0, y - 11)), it.label, fill=c)
        if it.keypoints:
            draw_keypoints(d, it.keypoints, it.skeleton or [], scale, c, radius=3)
    return np.asarray(pil)


def draw_keypoints(d: ImageDraw.ImageDraw, keypoints: Sequence[float], skeleton: Sequence[Sequence[int]],
                   scale: float, c: tuple[int, int, int], radius: int) -> None:
    """Keypoints [x, y, v] * K joined by their 1-based skeleton: visible white, occluded grey."""
    k = np.asarray(keypoints, dtype=float).reshape(-1, 3)
    for a, b in skeleton:
        if 0 < a <= len(k) and 0 < b <= len(k) and k[a - 1, 2] > 0 and k[b - 1, 2] > 0:
            d.line([tuple(k[a - 1, :2] * scale), tuple(k[b - 1, :2] * scale)], fill=c, width=2)
    for px, py, v in k:
        if v > 0:
            d.ellipse([px * scale - radius, py * scale - radius, px * scale + radius, py * scale + radius],
                      fill=(255, 255, 255) if v == 2 else (90, 90, 90), outline=c)


def _resize_mask(m: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127


def _dashed_rect(d: ImageDraw.ImageDraw, x0, y0, x1, y1, c, width, dash=6) -> None:
    for (ax, ay, bx, by) in ((x0, y0, x1, y0), (x1, y0, x1, y1), (x1, y1, x0, y1), (x0, y1, x0, y0)):
        length = max(abs(bx - ax), abs(by - ay))
        n = max(1, int(length // dash))
        for k in range(0, n, 2):
            t0, t1 = k / n, min(1.0, (k + 1) / n)
            d.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                   fill=c, width=width)
