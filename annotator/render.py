"""The server-side renderer (the Dataset gallery; the label view draws in the browser: canvas.js): masks in
distinct colours (one label map, one blend), boxes (proposals dashed, accepted solid, the selected one
thick), a tag per instance, keypoints joined by their skeleton."""

from __future__ import annotations

import colorsys
import math
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from db import crops
from db import masks as mask_codec
from db.instances import Instances

MIN_TAGGED = 16  # a box narrower than this many pixels as drawn gets no text tag
DRAW_REACH = 4  # boxes and keypoints further than this many image sizes away are not drawable

Crop = tuple[tuple[int, int], np.ndarray] | None  # (y0, x0) and a bool crop at display scale, or None


def color(i: int) -> tuple[int, int, int]:
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


class CannotDraw(ValueError):
    """One annotation row that cannot be drawn; the message names it and says why."""


def check_drawable(ann: Any, height: int, width: int, mask: Any = None) -> None:
    """Raise CannotDraw (naming the annotation id) for a row whose segmentation, box or keypoints cannot be
    drawn, so a caller can show everything else. ``mask``: the row's segmentation as already decoded
    (db.crops.decode_crops: a Crop, None, or the MaskError naming what is wrong), so it is not read twice."""
    try:
        if isinstance(mask, Exception):
            raise mask
        seg = ann.segmentation
        if seg and mask is None:
            mask_codec.check(seg, height, width)
        bbox = _coordinates(ann.bbox, height, width, step=2)
        if len(bbox) != 4:
            raise ValueError(f"bbox has {len(bbox)} values, not 4")
        if ann.keypoints:
            _coordinates(ann.keypoints, height, width, step=3)
    except Exception as e:  # any bad value in one row: that row is named, the view goes on
        raise CannotDraw(f"annotation {ann.id} cannot be drawn: {e}") from e


def _coordinates(values: Sequence[float], height: int, width: int, step: int) -> list[float]:
    """``values`` as floats, refusing x, y pairs (every ``step`` values) that are not finite or lie more
    than DRAW_REACH image sizes away (PIL cannot draw them)."""
    out = [float(v) for v in values]
    reach = DRAW_REACH * max(height, width, 1)
    for k in range(0, len(out) - 1, step):
        if not all(math.isfinite(v) and abs(v) <= reach for v in out[k:k + 2]):
            raise ValueError(f"coordinate {out[k:k + 2]} is not finite or lies far outside the image")
    return out


def display_crop(mask: crops.Crop | None, scale: float, h: int, w: int) -> Crop:
    """A mask's crop sampled at display scale (nearest neighbour), clipped to an (h, w) picture; the work is
    in proportion to the crop, never to the image."""
    if mask is None or mask.m.size == 0:
        return None
    y0, y1 = int(np.floor(mask.y * scale)), min(h, int(np.ceil((mask.y + mask.h) * scale)))
    x0, x1 = int(np.floor(mask.x * scale)), min(w, int(np.ceil((mask.x + mask.w) * scale)))
    if y1 <= y0 or x1 <= x0:
        return None
    ys = ((np.arange(y0, y1) / scale).astype(np.int64) - mask.y).clip(0, mask.h - 1)
    xs = ((np.arange(x0, x1) / scale).astype(np.int64) - mask.x).clip(0, mask.w - 1)
    return (y0, x0), mask.m[ys[:, None], xs[None, :]]


def draw_instances(base: np.ndarray, inst: Instances, scale: float, shown: Sequence[int], *,
                   tag: Callable[[int], str], skeleton: Callable[[int], Sequence[Sequence[int]]],
                   selected: int | None = None, crop: Callable[[int], Crop] | None = None) -> Image.Image:
    """``base`` is the picture (h, w, 3) uint8 at ``scale`` of the instances' resolution; ``shown`` the
    instance indices to draw; ``tag(i)`` its text, ``skeleton(i)`` its category's 1-based pairs; ``crop(i)``
    its display-scale mask crop (a caller may cache them)."""
    h, w = base.shape[:2]
    crop = crop or (lambda i: display_crop(inst.crop(i), scale, h, w))
    labels = np.zeros((h, w), np.int32)
    for i in shown:
        c = crop(i)
        if c is not None:
            (y0, x0), small = c
            labels[y0:y0 + small.shape[0], x0:x0 + small.shape[1]][small] = i + 1
    lut = np.zeros((len(inst) + 1, 3), np.float32)
    alpha = np.zeros(len(inst) + 1, np.float32)
    for i in shown:
        lut[i + 1] = color(i)
        alpha[i + 1] = 0.6 if i == selected else 0.4
    out = base.copy()
    sel = labels > 0  # blend only where some mask is
    lab = labels[sel]
    a = alpha[lab][:, None]
    out[sel] = (base[sel] * (1 - a) + lut[lab] * a).astype(np.uint8)
    for i in shown:  # proposals' dashed boxes, straight into the pixels (a PIL line per dash is slow)
        if inst.states[i] == "proposed":
            x, y, bw, bh = (float(v) * scale for v in inst.bboxes[i])
            _dashed_rect(out, x, y, x + bw, y + bh, color(i), 3 if i == selected else 1)
    pil = Image.fromarray(out)
    d = ImageDraw.Draw(pil)
    for i in shown:
        c = color(i)
        x, y, bw, bh = (float(v) * scale for v in inst.bboxes[i])
        if inst.states[i] != "proposed":
            d.rectangle([x, y, x + bw, y + bh], outline=c, width=3 if i == selected else 2)
        if bw >= MIN_TAGGED or i == selected:  # a tag on a box a few pixels wide is noise (and slow, by thousands)
            d.text((x + 2, max(0, y - 11)), tag(i), fill=c)
        if inst.keypoints[i]:
            draw_keypoints(d, inst.keypoints[i], skeleton(i), scale, c, radius=4 if i == selected else 3)
    return pil


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


_DASHES = (np.arange(4096) // 6) % 2 == 0  # dash, gap, dash, ... (6 pixels each)


def _dashes(n: int) -> np.ndarray:
    return _DASHES[:n] if n <= len(_DASHES) else (np.arange(n) // 6) % 2 == 0


def _dashed_rect(out: np.ndarray, x0: float, y0: float, x1: float, y1: float, c, width: int) -> None:
    """A rectangle outline ``width`` pixels thick, in dashes, drawn into the picture ``out`` (h, w, 3)."""
    h, w = out.shape[:2]
    xa, xb = int(min(max(round(x0), 0), w - 1)), int(min(max(round(x1), 0), w - 1))
    ya, yb = int(min(max(round(y0), 0), h - 1)), int(min(max(round(y1), 0), h - 1))
    across, down = _dashes(xb - xa + 1), _dashes(yb - ya + 1)
    for k in range(width):
        for row in (min(ya + k, h - 1), max(yb - k, 0)):
            out[row, xa:xb + 1][across] = c
        for col in (min(xa + k, w - 1), max(xb - k, 0)):
            out[ya:yb + 1, col][down] = c
