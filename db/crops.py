"""Masks as what they cover: a ``Crop`` is the bool array of a mask's bounding box and where that box lies.
Its memory grows with the object, not with the frame; a full (H, W) array is made only where a consumer needs
one (``Crop.full``: a loss target, COCO evaluation) and is never kept. Decoding from COCO RLE or polygons and
encoding back (the bytes ``db.masks.encode`` gives) never make a full frame; ``decode_crops`` decodes the
masks of an image with thousands of annotations together.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from db.masks import (MaskError, check, counts_string, decode, encode_crops, iou, mask_to_polygons, rle_counts,
                      to_rle)


@dataclasses.dataclass(frozen=True, eq=False)
class Crop:
    """A mask as a bool (h, w) array ``m`` whose top-left pixel lies at image pixel (``x``, ``y``);
    every pixel outside it is 0. Read-only: an edit makes a new Crop, so one may be shared (an undo
    step, a copy of the instance) without copying. Made by this module it is tight (its first and last
    rows and columns hold a pixel) and lies inside its image; an empty mask is a 0 x 0 crop."""

    x: int
    y: int
    m: np.ndarray

    def __post_init__(self):
        m = np.asarray(self.m, dtype=bool)  # the crop owns the array it is given: no copy
        if m.ndim != 2:
            raise ValueError(f"a crop is a 2-d array, not {m.ndim}-d")
        m.flags.writeable = False
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "x", int(self.x))
        object.__setattr__(self, "y", int(self.y))

    @classmethod
    def _made(cls, x: int, y: int, m: np.ndarray) -> "Crop":
        """A crop this module just made (ints, a fresh 2-d bool array): no checks, for decoding thousands."""
        m.flags.writeable = False
        c = object.__new__(cls)
        c.__dict__.update(x=x, y=y, m=m)
        return c

    @property
    def h(self) -> int:
        return int(self.m.shape[0])

    @property
    def w(self) -> int:
        return int(self.m.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.m.nbytes)

    def empty(self) -> bool:
        return self.m.size == 0 or not self.m.any()

    def area(self) -> int:
        return int(np.count_nonzero(self.m))

    def bbox_xywh(self) -> list[float]:
        """The tight xywh box (COCO's pixel extents); [0, 0, 0, 0] for an empty mask."""
        t = tight(self)
        return [0.0, 0.0, 0.0, 0.0] if t.m.size == 0 else [float(t.x), float(t.y), float(t.w), float(t.h)]

    def at(self, x: float, y: float) -> bool:
        """Whether image pixel (x, y) (any real coordinates: the pixel holding them) is in the mask."""
        c, r = math.floor(x) - self.x, math.floor(y) - self.y
        return 0 <= r < self.h and 0 <= c < self.w and bool(self.m[r, c])

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The mask's pixels over image window [x0, x1) x [y0, y1) as a new (y1-y0, x1-x0) bool array."""
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), bool)
        ax0, ay0 = max(x0, self.x), max(y0, self.y)
        ax1, ay1 = min(x1, self.x + self.w), min(y1, self.y + self.h)
        if ax1 > ax0 and ay1 > ay0:
            out[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = self.m[ay0 - self.y:ay1 - self.y, ax0 - self.x:ax1 - self.x]
        return out

    def full(self, height: int, width: int) -> np.ndarray:
        """The (height, width) frame: for a consumer that needs one, never to keep."""
        return self.window(0, 0, width, height)


EMPTY = Crop(0, 0, np.zeros((0, 0), bool))


def _bounds(m: np.ndarray) -> tuple[int, int, int, int] | None:
    """The rows r0:r1 and columns c0:c1 of ``m`` that hold a pixel, or None when none do."""
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def tight(c: Crop) -> Crop:
    """``c`` cut to the rows and columns that hold a pixel (EMPTY when none do)."""
    b = _bounds(c.m) if c.m.size else None
    if b is None:
        return EMPTY
    r0, r1, c0, c1 = b
    if (r0, c0, r1, c1) == (0, 0, c.h, c.w):
        return c
    return Crop(c.x + c0, c.y + r0, c.m[r0:r1, c0:c1].copy())


def crop_of(mask: np.ndarray, x: int = 0, y: int = 0) -> Crop:
    """A full (or placed) bool array as its tight crop (a copy: the caller keeps its array)."""
    m = np.asarray(mask, dtype=bool)
    b = _bounds(m) if m.size else None
    if b is None:
        return EMPTY
    r0, r1, c0, c1 = b
    return Crop(x + c0, y + r0, m[r0:r1, c0:c1].copy())


def clip(c: Crop, height: int, width: int) -> Crop:
    """``c`` cut to the image (a crop drawn past its edges), tight."""
    x0, y0 = max(0, c.x), max(0, c.y)
    x1, y1 = min(width, c.x + c.w), min(height, c.y + c.h)
    if x1 <= x0 or y1 <= y0:
        return EMPTY
    return tight(Crop(x0, y0, c.window(x0, y0, x1, y1)))


def _frame(*crops: Crop) -> tuple[int, int, int, int]:
    live = [c for c in crops if c.m.size]
    if not live:
        return 0, 0, 0, 0
    return (min(c.x for c in live), min(c.y for c in live), max(c.x + c.w for c in live),
            max(c.y + c.h for c in live))


def union(a: Crop, b: Crop) -> Crop:
    """The pixels of either mask; work and memory in proportion to the box around both."""
    x0, y0, x1, y1 = _frame(a, b)
    return tight(Crop(x0, y0, a.window(x0, y0, x1, y1) | b.window(x0, y0, x1, y1)))


def minus(a: Crop, b: Crop) -> Crop:
    """The pixels of ``a`` not in ``b``; in proportion to ``a``'s box."""
    if a.m.size == 0:
        return EMPTY
    return tight(Crop(a.x, a.y, a.m & ~b.window(a.x, a.y, a.x + a.w, a.y + a.h)))


def within(a: Crop, x0: int, y0: int, x1: int, y1: int) -> Crop:
    """The pixels of ``a`` inside the window [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = max(x0, a.x), max(y0, a.y), min(x1, a.x + a.w), min(y1, a.y + a.h)
    if x1 <= x0 or y1 <= y0:
        return EMPTY
    return tight(Crop(x0, y0, a.window(x0, y0, x1, y1)))


def crop_iou(a: Crop, b: Crop) -> float:
    """Mask IoU of two crops (1.0 for two empty masks, as ``iou``)."""
    x0, y0, x1, y1 = _frame(a, b)
    return iou(a.window(x0, y0, x1, y1), b.window(x0, y0, x1, y1))


def pixels_differing(a: Crop, b: Crop) -> int:
    x0, y0, x1, y1 = _frame(a, b)
    return int(np.count_nonzero(a.window(x0, y0, x1, y1) ^ b.window(x0, y0, x1, y1)))


def _runs(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The run lengths (0s first, column-major) of a segmentation, checked: nothing is rasterised at full
    size (polygons are turned into RLE by pycocotools, which works along their outline)."""
    if isinstance(segmentation, dict):
        if segmentation.get("size") != [height, width]:
            check(segmentation, height, width)  # names the size mismatch
        counts = segmentation.get("counts")
        if isinstance(counts, list):
            check(segmentation, height, width)
            return np.asarray(counts, np.int64)
        if isinstance(counts, bytes):
            counts = counts.decode("ascii", "replace")
        runs = rle_counts(counts) if isinstance(counts, str) else None
        if runs is None or (runs.size and runs.min() < 0) or int(runs.sum()) != height * width:
            check(segmentation, height, width)  # names what is wrong
        return runs
    return rle_counts(to_rle(segmentation, height, width)["counts"])


def decode_crop(segmentation: Any, height: int, width: int) -> Crop:
    """COCO segmentation (polygons or RLE) -> its tight ``Crop``, without a full-size array: the work is in
    proportion to the mask's runs and its crop. Raises MaskError for an invalid segmentation."""
    if isinstance(segmentation, list) and not segmentation:
        return EMPTY
    runs = _runs(segmentation, height, width)
    return _crops_from_runs(runs, np.zeros(runs.size, np.int64), 1, height, width)[0]


def encode_crop(c: Crop, height: int, width: int) -> dict[str, Any]:
    """A crop inside its image -> the compressed COCO RLE of the full mask (the bytes ``encode`` gives)."""
    c = clip(c, height, width)
    if c.m.size == 0:
        return {"size": [height, width], "counts": counts_string(np.array([height * width]))}
    return encode_crops(c.m.T[None], np.array([c.x]), np.array([c.y]), height, width)[0]


def crop_to_polygons(c: Crop) -> list[list[float]]:
    """``mask_to_polygons`` of the mask a crop holds, in image coordinates."""
    polys = mask_to_polygons(c.m)
    return [[v + (c.x if k % 2 == 0 else c.y) for k, v in enumerate(p)] for p in polys]


def polygons_differ(c: Crop, polygons: list[list[float]], height: int, width: int) -> str | None:
    """Why ``polygons`` (image coordinates, around ``c``) do not give back the mask ``c`` holds when
    pycocotools rasterizes them, as every COCO reader does; None when they give back exactly its pixels.
    Rasterized over the crop's box and a pixel around it (within the image), never a full frame: polygons
    traced from a crop lie inside its box, and rasterizing is the same shifted by whole pixels."""
    if c.m.size == 0 and not polygons:
        return None
    x0, y0, x1, y1 = _frame(c)
    if polygons:
        px = [v for p in polygons for v in p[0::2]]
        py = [v for p in polygons for v in p[1::2]]
        x0, y0 = min(x0, math.floor(min(px))), min(y0, math.floor(min(py)))
        x1, y1 = max(x1, math.ceil(max(px))), max(y1, math.ceil(max(py)))
    x0, y0, x1, y1 = max(0, x0 - 1), max(0, y0 - 1), min(width, x1 + 1), min(height, y1 + 1)
    shifted = [[v - (x0 if k % 2 == 0 else y0) for k, v in enumerate(p)] for p in polygons]
    drawn = decode(shifted, y1 - y0, x1 - x0)
    want = c.window(x0, y0, x1, y1)
    extra, missing = int(np.count_nonzero(drawn & ~want)), int(np.count_nonzero(want & ~drawn))
    if not extra and not missing:
        return None
    if not missing:
        return f"a hole: its polygons would fill {extra} pixel(s) the mask leaves out"
    return f"polygons differ: {extra + missing} pixel(s) differ from the mask"


BATCH_BAND_BYTES = 64 * 2 ** 20  # decoding fills at most this many bytes of crops at once


def _segmented_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running sums of ``values`` that start again wherever ``group`` (sorted) changes."""
    cs = np.cumsum(values)
    if values.size == 0:
        return cs
    first = np.ones(values.size, bool)
    first[1:] = group[1:] != group[:-1]
    before = (cs - values)[first]
    return cs - before[np.cumsum(first) - 1]


def _batch_runs(strings: list[str], height: int, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The run lengths of many compressed RLE counts strings at once, and for each run its string's index;
    None when any string is not valid for an image of this size (the caller then decodes them one by one,
    which names the bad one)."""
    lens = np.fromiter((len(s) for s in strings), np.int64, len(strings))
    if lens.min() == 0:
        return None
    c = np.frombuffer("".join(strings).encode("ascii"), np.uint8).astype(np.int64) - 48
    if c.min() < 0 or c.max() > 63:
        return None
    last_char = np.cumsum(lens) - 1
    if ((c[last_char] & 0x20) != 0).any():  # a string ends in the middle of a number
        return None
    ends = np.flatnonzero((c & 0x20) == 0)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 12:
        return None
    char_group = np.repeat(np.arange(ends.size), lengths)
    shift = 5 * (np.arange(c.size) - starts[char_group])
    d = np.add.reduceat((c & 0x1F) << shift, starts)
    d = d - np.where((c[ends] & 0x10) != 0, np.left_shift(1, 5 * lengths), 0)
    sid = np.repeat(np.arange(len(strings)), np.diff(np.searchsorted(ends, np.r_[-1, last_char], side="right")))
    first_of = np.searchsorted(sid, np.arange(len(strings)))
    pos = np.arange(d.size) - first_of[sid]
    runs = d.copy()
    for part in ((pos % 2 == 0) & (pos >= 2), pos % 2 == 1):  # differences to the number two places earlier
        runs[part] = _segmented_cumsum(d[part], sid[part])
    if runs.min() < 0:
        return None
    totals = np.bincount(sid, weights=runs, minlength=len(strings))
    if not np.all(totals == height * width):
        return None
    return runs, sid


def _one_crop(seg: Any, height: int, width: int) -> "Crop | MaskError":
    try:
        return decode_crop(seg, height, width)
    except MaskError as e:
        return e
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        return MaskError(f"not a COCO segmentation ({type(e).__name__}: {e})")


def decode_crops(segmentations: list, height: int, width: int) -> list:
    """``decode_crop`` of many segmentations at once (an image with thousands of annotations): compressed
    RLEs are decoded together, in a few array operations, other forms one by one. Each entry of the result
    is a ``Crop``, None for a missing or empty segmentation, or the MaskError that names what is wrong with
    that one."""
    out: list = [None] * len(segmentations)
    batch = []
    for k, seg in enumerate(segmentations):
        if (isinstance(seg, dict) and seg.get("size") == [height, width] and isinstance(seg.get("counts"), str)
                and seg["counts"] and seg["counts"].isascii()):
            batch.append(k)
        elif seg:
            out[k] = _one_crop(seg, height, width)
    got = _batch_runs([segmentations[k]["counts"] for k in batch], height, width) if batch else None
    if got is None:
        for k in batch:
            out[k] = _one_crop(segmentations[k], height, width)
        return out
    runs, sid = got
    for k, crop in zip(batch, _crops_from_runs(runs, sid, len(batch), height, width)):
        out[k] = crop
    return out


def _crops_from_runs(runs: np.ndarray, sid: np.ndarray, n: int, height: int, width: int) -> list[Crop]:
    """The tight crops of ``n`` masks given by their run lengths (0s first, column-major, checked), all
    concatenated, with ``sid`` each run's mask (sorted). Boxes come from the runs of 1s; each crop is filled
    by marking where its runs start and end in a buffer of the crops' size and summing along it."""
    out: list[Crop] = [EMPTY] * n
    ends = _segmented_cumsum(runs, sid)
    pos = np.arange(runs.size) - np.searchsorted(sid, sid)
    ones = (pos % 2 == 1) & (runs > 0)
    e, sid1 = ends[ones], sid[ones]
    s = e - runs[ones]
    c0, c1 = s // height, (e - 1) // height
    one_col = c0 == c1
    present = np.zeros(n, bool)
    present[sid1] = True
    x0 = np.full(n, width, np.int64)
    x1 = np.zeros(n, np.int64)
    y0 = np.full(n, height, np.int64)
    y1 = np.zeros(n, np.int64)
    np.minimum.at(x0, sid1, c0)
    np.maximum.at(x1, sid1, c1 + 1)
    np.minimum.at(y0, sid1, np.where(one_col, s % height, 0))
    np.maximum.at(y1, sid1, np.where(one_col, (e - 1) % height + 1, height))
    wc, hc = (x1 - x0) * present, (y1 - y0) * present
    size = wc * hc
    run_first = np.searchsorted(sid1, np.arange(n))
    run_last = np.searchsorted(sid1, np.arange(n), side="right")
    # each run's place in its mask's crop, column-major (a run over several columns spans full columns)
    local = (c0 - x0[sid1]) * hc[sid1] + (s - c0 * height - y0[sid1])
    j = 0
    while j < n:  # chunks of masks whose crops together stay within BATCH_BAND_BYTES
        k = j + 1
        total = size[j]
        while k < n and total + size[k] <= BATCH_BAND_BYTES:
            total += size[k]
            k += 1
        offs = np.zeros(k - j + 1, np.int64)
        offs[1:] = np.cumsum(size[j:k])
        buf = np.zeros(int(offs[-1]) + 1, np.int8)
        a, b = run_first[j], run_last[k - 1]
        at = local[a:b] + offs[sid1[a:b] - j]
        np.add.at(buf, at, 1)
        np.add.at(buf, at + (e[a:b] - s[a:b]), -1)
        filled = np.cumsum(buf, dtype=np.int8).view(bool)
        for m in range(j, k):
            if present[m]:
                crop = filled[offs[m - j]:offs[m - j + 1]].reshape(int(wc[m]), int(hc[m])).T.copy()
                out[m] = Crop._made(int(x0[m]), int(y0[m]), crop)
        j = k
    return out
