"""Mask codecs: binary masks <-> COCO RLE <-> polygons.

Masks are ``numpy`` arrays of shape (H, W), dtype bool or uint8. RLE is COCO RLE: column-major
(Fortran order); compressed RLE has ``counts`` as a ``str``. Polygons are COCO polygons:
``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates, several parts for a multi-part object.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

# Polygon vertices, boxes and keypoints may lie at most this many image sizes from the origin. Rasterising
# a polygon costs memory in proportion to its extent, so a vertex at 2**63 would exhaust memory (or crash
# pycocotools); nothing real lies that far outside its image.
COORD_LIMIT = 4


class MaskError(ValueError):
    """A segmentation that is not valid COCO (the message says what is wrong); nothing was decoded."""


def rle_counts(counts: str) -> np.ndarray:
    """Decode a compressed COCO RLE ``counts`` string into run lengths, checking it the way pycocotools'
    C decoder does not (it trusts its input and writes past the mask on a bad one). Raises MaskError."""
    if not isinstance(counts, str) or not counts.isascii():
        raise MaskError("RLE counts must be an ASCII string")
    c = np.frombuffer(counts.encode("ascii"), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise MaskError("RLE counts hold characters outside COCO's alphabet ('0'..'o')")
    ends = np.flatnonzero((c & 0x20) == 0)  # the last character of each number
    if ends.size == 0 or ends[-1] != c.size - 1:
        raise MaskError("RLE counts end in the middle of a number")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 12:
        raise MaskError("RLE counts hold a number too large for any image")
    group = np.repeat(np.arange(ends.size), lengths)
    shift = 5 * (np.arange(c.size) - starts[group])
    d = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    d = d - np.where(negative, np.left_shift(1, 5 * lengths), 0)
    x = d.copy()  # from the fourth number on, each is a difference to the one two places earlier
    x[2::2] = np.cumsum(d[2::2])
    x[1::2] = np.cumsum(d[1::2])
    return x


def rle_problem(rle: Any, height: int, width: int) -> str | None:
    """Why ``rle`` is not a COCO RLE of an image of this size (None when it is)."""
    if not isinstance(rle, dict):
        return "RLE must be an object with size and counts"
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in size)):
        return "RLE 'size' must be [height, width]"
    if size != [height, width]:
        return f"RLE size {size} disagrees with its image's [height, width] [{height}, {width}]"
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            return "uncompressed RLE 'counts' must be non-negative integers"
        total = sum(counts)
    elif isinstance(counts, (str, bytes)):
        try:
            runs = rle_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
        except (MaskError, UnicodeDecodeError) as e:
            return f"compressed RLE is not valid COCO RLE: {e}"
        if runs.size and runs.min() < 0:
            return "compressed RLE is not valid COCO RLE: a run length is negative"
        total = int(runs.sum())
    else:
        return "RLE 'counts' must be a string or a list of integers"
    if total != height * width:
        return f"RLE run lengths sum to {total}, not height*width = {height * width}"
    return None


def polygon_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Why ``segmentation`` is not a list of COCO polygons within reach of the image (None when it is)."""
    if not isinstance(segmentation, list):
        return "must be a list of polygons or an RLE object"
    for k, poly in enumerate(segmentation):
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in poly):
            return f"polygon {k} must be a list of numbers"
        if len(poly) % 2:
            return f"polygon {k} has an odd number of coordinates"
        if len(poly) < 6:
            return f"polygon {k} has {len(poly) // 2} point(s); at least 3 are needed"
        bad = coordinate_problem(poly, height, width)
        if bad:
            return f"polygon {k}: {bad}"
    return _perimeter_problem(segmentation, height, width)


def _perimeter_problem(polygons: list, height: int, width: int) -> str | None:
    """Rasterising polygons (pycocotools) costs memory in proportion to their total outline, measured as
    the sum over edges of max(|dx|, |dy|); a zig-zag of far-apart vertices, each within reach, could need
    gigabytes. The bound, twice the image's pixels plus its border, admits the outline of any mask of the
    image (a checkerboard's included)."""
    limit = 2 * height * width + 8 * (height + width)
    reach = 2 * COORD_LIMIT * max(height, width)  # the longest edge between two allowed vertices
    if sum(len(p) // 2 for p in polygons) * reach <= limit:
        return None  # cannot exceed it: skip the exact sum
    total = 0.0
    for poly in polygons:
        a = np.asarray(poly, np.float64).reshape(-1, 2)
        total += float(np.abs(np.diff(np.vstack([a, a[:1]]), axis=0)).max(axis=1).sum())
    if total > limit:
        return (f"the outline is {total:.0f} pixels long, over the limit of {limit} for a "
                f"{width}x{height} image (2 x pixels + border)")
    return None


def coordinate_problem(flat_xy: list, height: int, width: int, step: int = 2) -> str | None:
    """Why the x, y pairs in ``flat_xy`` (every ``step`` values: 2 for polygons, 3 for keypoints) are
    unusable: not finite, or more than COORD_LIMIT image sizes away. None when they are fine."""
    xs, ys = flat_xy[0::step], flat_xy[1::step]
    for axis, vals, size in (("x", xs, width), ("y", ys, height)):
        for v in vals:
            try:
                ok = math.isfinite(v) and -COORD_LIMIT * size <= v <= COORD_LIMIT * size
            except OverflowError:
                ok = False
            if not ok:
                return (f"{axis} coordinate {v!r} is not finite or more than {COORD_LIMIT}x the image's "
                        f"{'width' if axis == 'x' else 'height'} ({size}) away")
    return None


def check(segmentation: Any, height: int, width: int) -> None:
    """Raise MaskError unless ``segmentation`` is a valid COCO segmentation for an image of this size."""
    problem = (rle_problem(segmentation, height, width) if isinstance(segmentation, dict)
               else polygon_problem(segmentation, height, width))
    if problem:
        raise MaskError(problem)


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


def counts_string(runs: np.ndarray) -> str:
    """COCO's compressed form of run lengths (``rle_counts`` reversed), as pycocotools writes it: from the
    third number on each is a difference to the one two places earlier, written 5 bits per character from
    the lowest, a continuation bit 0x20 on every character but a number's last, 48 added."""
    return counts_strings(np.asarray(runs, np.int64), np.array([len(runs)]))[0]


def counts_strings(runs: np.ndarray, lengths: np.ndarray) -> list[str]:
    """``counts_string`` of many run-length lists at once: ``runs`` concatenated, ``lengths`` per list."""
    runs = np.asarray(runs, np.int64)
    lengths = np.asarray(lengths, np.int64)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)  # where each value's list starts
    pos = np.arange(runs.size) - first
    x = runs.copy()
    later = pos > 2
    x[later] -= runs[np.flatnonzero(later) - 2]
    chars = np.zeros((runs.size, 13), np.uint8)  # 13 x 5 bits hold any int64
    n_chars = np.zeros(runs.size, np.int64)
    live = np.ones(runs.size, bool)
    for k in range(13):
        c = x & 0x1F
        x = x >> 5  # arithmetic: a negative number ends at -1
        more = np.where((c & 0x10) != 0, x != -1, x != 0)
        chars[:, k] = np.where(live, (c | np.where(more, 0x20, 0)) + 48, 0)
        n_chars += live
        live &= more
        if not live.any():
            break
    flat = chars[chars != 0].tobytes().decode("ascii")  # row by row: each value's characters in order
    per_list = np.add.reduceat(n_chars, np.cumsum(lengths) - lengths) if runs.size else np.zeros(len(lengths), np.int64)
    per_list = np.where(lengths > 0, per_list, 0)
    ends = np.cumsum(per_list)
    return [flat[e - n:e] for e, n in zip(ends.tolist(), per_list.tolist())]


def encode_crops(crops: np.ndarray, x0: np.ndarray, y0: np.ndarray, height: int, width: int) -> list[dict[str, Any]]:
    """Compressed COCO RLEs of ``height`` x ``width`` masks given as crops: ``crops`` (N, Wc, Hc) bool,
    column-major (crop column ``c`` of mask ``n`` is ``crops[n, c]``), placed with their top-left pixel at
    (``x0[n]``, ``y0[n]``); a crop must lie inside the image, everything outside it is 0. The same bytes as
    ``encode`` of each full mask, without ever making one: only the crops' run boundaries are visited."""
    n, wc, hc = crops.shape
    x0, y0 = np.asarray(x0, np.int64), np.asarray(y0, np.int64)
    if n == 0:
        return []
    if wc == 0 or hc == 0:
        return [{"size": [height, width], "counts": counts_string(np.array([height * width]))} for _ in range(n)]
    padded = np.zeros((n, wc, hc + 2), np.int8)
    padded[:, :, 1:-1] = crops
    steps = np.diff(padded, axis=2)  # +1: a run of 1s starts here, -1: one ends here (column by column)
    k, col, row = np.nonzero(steps)  # in column-major order of each mask, masks in order
    at = (x0[k] + col) * height + y0[k] + row  # positions in the full mask's column-major pixels
    # a run that ends at the bottom of a column and goes on at the top of the next is one run
    joined = np.zeros(at.size, bool)
    if at.size > 1:
        same = (k[1:] == k[:-1]) & (at[1:] == at[:-1])
        joined[1:] |= same
        joined[:-1] |= same
    joined |= at == height * width  # a run that ends with the image: the final run closes it
    k, at = k[~joined], at[~joined]
    per_mask = np.bincount(k, minlength=n)
    # run lengths: from 0 to the first boundary, between boundaries, from the last to the end
    lengths = per_mask + 1
    bounds = np.zeros(int(lengths.sum()) + n, np.int64)
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    slot = np.repeat(starts + 1, per_mask) + (np.arange(at.size) - np.repeat(np.cumsum(per_mask) - per_mask, per_mask))
    bounds[slot] = at
    bounds[starts + lengths] = height * width
    runs = np.diff(bounds)
    keep = np.ones(runs.size, bool)
    keep[starts[1:] - 1] = False  # the differences across two masks
    strings = counts_strings(runs[keep], lengths)
    return [{"size": [height, width], "counts": s} for s in strings]


def to_compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """Any COCO RLE (compressed, bytes or uncompressed list counts) -> compressed with str counts.
    Raises MaskError for anything that is not valid COCO RLE."""
    size = rle.get("size") if isinstance(rle, dict) else None
    if not (isinstance(size, list) and len(size) == 2):
        raise MaskError("RLE 'size' must be [height, width]")
    h, w = (int(v) for v in size)
    check(rle, h, w)
    counts = rle["counts"]
    if isinstance(counts, list):
        r = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        counts = r["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [h, w], "counts": counts}


def _as_pycoco(rle: dict[str, Any]) -> dict[str, Any]:
    """Any COCO RLE as pycocotools takes it (bytes counts), checked once (to_compressed)."""
    r = to_compressed(rle)
    return {"size": r["size"], "counts": r["counts"].encode("ascii")}


def _encoded(rle: dict[str, Any]) -> dict[str, Any]:
    """An RLE this module just made (compressed, str counts) as pycocotools takes it: nothing to check."""
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygons or RLE) -> bool mask (H, W). Raises MaskError for an invalid one."""
    if isinstance(segmentation, dict):
        if segmentation.get("size") != [height, width]:
            check(segmentation, height, width)  # names the size mismatch
        return mask_utils.decode(_as_pycoco(segmentation)).astype(bool)
    if isinstance(segmentation, list) and not segmentation:  # no polygon: an empty mask
        return np.zeros((height, width), dtype=bool)
    check(segmentation, height, width)  # anything else that is no segmentation is refused, as check says
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """COCO segmentation (polygons or any RLE) -> compressed RLE with str counts."""
    if isinstance(segmentation, dict):
        return to_compressed(segmentation)
    if isinstance(segmentation, list) and not segmentation:  # no polygon: an empty mask, as decode says
        return encode(np.zeros((height, width), dtype=bool))
    check(segmentation, height, width)
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
    r = mask_utils.merge(rles)
    return {"size": [height, width], "counts": r["counts"].decode("ascii")}


def area(segmentation: Any, height: int, width: int) -> float:
    if isinstance(segmentation, dict):
        return float(mask_utils.area(_as_pycoco(segmentation)))
    return float(mask_utils.area(_encoded(to_rle(segmentation, height, width))))


def bbox_xywh(segmentation: Any, height: int, width: int) -> list[float]:
    """Tight xywh box around the mask (COCO's convention: pixel extents, not centres)."""
    if isinstance(segmentation, dict):
        return [float(v) for v in mask_utils.toBbox(_as_pycoco(segmentation))]
    return [float(v) for v in mask_utils.toBbox(_encoded(to_rle(segmentation, height, width)))]


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
    return [p for p, hole in mask_to_rings(mask) if not hole]


def mask_to_rings(mask: np.ndarray) -> list[tuple[list[float], bool]]:
    """Bool mask -> every boundary of it as (polygon, is_hole): outer boundaries and the boundaries of its
    holes (which run the other way round), vertices on pixel corners. Filled by the even-odd rule, all of them
    together give back exactly the mask's pixels."""
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
    rings = []
    for loop in loops:
        pts = _drop_collinear(loop)
        if len(pts) < 3:
            continue
        rings.append(([float(v) for p in pts for v in p], _signed_area(pts) <= 0))  # holes run the other way
    return rings


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
