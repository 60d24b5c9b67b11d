"""Mask codecs: binary masks <-> COCO RLE <-> polygons.

Masks are ``numpy`` arrays of shape (H, W), dtype bool or uint8. RLE is COCO RLE: column-major
(Fortran order); compressed RLE has ``counts`` as a ``str``. Polygons are COCO polygons:
``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates, several parts for a multi-part object.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Binary mask (H, W) -> compressed RLE with ``counts`` as str."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = mask_utils.encode(m)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def encode_batch(masks: np.ndarray) -> list[dict[str, Any]]:
    """Binary masks (N, H, W) -> list of compressed RLEs, encoded in one C call."""
    if len(masks) == 0:
        return []
    m = np.asfortranarray(np.transpose(np.asarray(masks, dtype=np.uint8), (1, 2, 0)))
    return [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
        for r in mask_utils.encode(m)
    ]


def to_compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """Any COCO RLE (compressed, bytes or uncompressed list counts) -> compressed with str counts."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        r = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        counts = r["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [h, w], "counts": counts}


def _as_pycoco(rle: dict[str, Any]) -> dict[str, Any]:
    r = to_compressed(rle)
    return {"size": r["size"], "counts": r["counts"].encode("ascii")}


def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygons or RLE) -> bool mask (H, W)."""
    if isinstance(segmentation, dict):
        return mask_utils.decode(_as_pycoco(segmentation)).astype(bool)
    if not segmentation:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """COCO segmentation (polygons or any RLE) -> compressed RLE with str counts."""
    if isinstance(segmentation, dict):
        return to_compressed(segmentation)
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
    r = mask_utils.merge(rles)
    return {"size": [height, width], "counts": r["counts"].decode("ascii")}


def area(segmentation: Any, height: int, width: int) -> float:
    if isinstance(segmentation, dict):
        return float(mask_utils.area(_as_pycoco(segmentation)))
    return float(mask_utils.area(_as_pycoco(to_rle(segmentation, height, width))))


def bbox_xywh(segmentation: Any, height: int, width: int) -> list[float]:
    """Tight xywh box around the mask (COCO's convention: pixel extents, not centres)."""
    if isinstance(segmentation, dict):
        return [float(v) for v in mask_utils.toBbox(_as_pycoco(segmentation))]
    return [float(v) for v in mask_utils.toBbox(_as_pycoco(to_rle(segmentation, height, width)))]


def mask_bbox_xywh(mask: np.ndarray) -> list[float]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# --- mask -> polygons -------------------------------------------------------------------------------
# Each connected region's outer boundary is traced along pixel edges ("crack following"): vertices lie
# on pixel corners, so the polygon encloses exactly the region's pixels. Holes cannot be expressed by
# COCO polygons (parts are unioned) and are filled; keep RLE for masks with holes when that matters.


def _boundary_edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Directed pixel-edge segments with the region on their right (image coords, y down)."""
    m = np.pad(mask.astype(bool), 1)
    nxt: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(x0, y0, x1, y1):
        for a, b, c, d in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()):
            nxt.setdefault((a, b), []).append((c, d))

    # top edges: pixel on, pixel above off -> edge left-to-right along y
    ys, xs = np.nonzero(m[1:, :] & ~m[:-1, :])  # ys is row index of the 'on' pixel in padded coords
    add(xs - 1, ys, xs, ys)
    # bottom edges: pixel on, pixel below off -> edge right-to-left along y+1
    ys, xs = np.nonzero(m[:-1, :] & ~m[1:, :])
    add(xs, ys, xs - 1, ys)
    # left edges: pixel on, left off -> edge bottom-to-top along x
    ys, xs = np.nonzero(m[:, 1:] & ~m[:, :-1])
    add(xs, ys, xs, ys - 1)
    # right edges: pixel on, right off -> edge top-to-bottom along x+1
    ys, xs = np.nonzero(m[:, :-1] & ~m[:, 1:])
    add(xs, ys - 1, xs, ys)
    return nxt


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Bool mask -> COCO polygons (one per outer boundary; holes are filled)."""
    nxt = _boundary_edges(mask)
    loops: list[list[tuple[int, int]]] = []
    while nxt:
        start = next(iter(nxt))
        loop = [start]
        prev_dir = None
        cur = start
        while True:
            outs = nxt.get(cur)
            if not outs:
                break
            if len(outs) > 1 and prev_dir is not None:
                # two regions touch at a corner: turn so each region keeps its own loop
                outs.sort(key=lambda p: _turn_rank(prev_dir, (p[0] - cur[0], p[1] - cur[1])))
            nb = outs.pop(0)
            if not outs:
                del nxt[cur]
            prev_dir = (nb[0] - cur[0], nb[1] - cur[1])
            cur = nb
            if cur == start:
                break
            loop.append(cur)
        if len(loop) >= 3:
            loops.append(loop)
    polys = []
    for loop in loops:
        pts = _drop_collinear(loop)
        if len(pts) < 3 or _signed_area(pts) <= 0:  # holes run the other way round
            continue
        polys.append([float(v) for p in pts for v in p])
    return polys


def _turn_rank(d_in: tuple[int, int], d_out: tuple[int, int]) -> int:
    # cross > 0 in y-down coordinates is a right turn; prefer right turns at pinch points.
    cross = d_in[0] * d_out[1] - d_in[1] * d_out[0]
    return 0 if cross > 0 else (1 if cross == 0 else 2)


def _drop_collinear(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    n = len(loop)
    for i in range(n):
        a, b, c = loop[i - 1], loop[i], loop[(i + 1) % n]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) != 0:
            out.append(b)
    return out


def _signed_area(pts: list[tuple[int, int]]) -> float:
    s = 0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        s += x0 * y1 - x1 * y0
    return s / 2.0
