import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from db import masks
from tests.helpers import uncompressed_rle

small_masks = st.integers(1, 24).flatmap(
    lambda h: st.integers(1, 24).flatmap(lambda w: arrays(np.bool_, (h, w)))
)


@given(small_masks)
@settings(max_examples=200, deadline=None)
def test_rle_round_trip_is_exact(m):
    rle = masks.encode(m)
    assert isinstance(rle["counts"], str)
    assert rle["size"] == list(m.shape)
    assert np.array_equal(masks.decode(rle, *m.shape), m)
    assert masks.area(rle, *m.shape) == m.sum()


@given(small_masks)
@settings(max_examples=100, deadline=None)
def test_uncompressed_rle_is_accepted(m):
    rle = uncompressed_rle(m)
    assert np.array_equal(masks.decode(rle, *m.shape), m)
    assert masks.to_compressed(rle) == masks.encode(m)


def _fill_holes(m: np.ndarray) -> np.ndarray:
    """Background not reachable from the border (8-connected, as the tracer separates regions that touch
    only at a corner) is a hole."""
    padded = np.pad(~m, 1, constant_values=True)
    reach = np.zeros_like(padded)
    reach[0, :] = reach[-1, :] = reach[:, 0] = reach[:, -1] = True
    while True:
        grown = reach.copy()
        grown[1:, :] |= reach[:-1, :]
        grown[:-1, :] |= reach[1:, :]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown[1:, 1:] |= reach[:-1, :-1]
        grown[:-1, :-1] |= reach[1:, 1:]
        grown[1:, :-1] |= reach[:-1, 1:]
        grown[:-1, 1:] |= reach[1:, :-1]
        grown &= padded
        if np.array_equal(grown, reach):
            break
        reach = grown
    outside = reach[1:-1, 1:-1]
    return ~outside


@given(small_masks)
@settings(max_examples=300, deadline=None)
def test_mask_to_polygons_is_exact_up_to_holes(m):
    polys = masks.mask_to_polygons(m)
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
    back = masks.decode(polys, *m.shape)
    assert np.array_equal(back, _fill_holes(m))


@given(small_masks)
@settings(max_examples=100, deadline=None)
def test_polygon_to_rle_matches_pycocotools(m):
    polys = masks.mask_to_polygons(m)
    if not polys:
        return
    ours = masks.to_rle(polys, *m.shape)
    ref = mask_utils.merge(mask_utils.frPyObjects(polys, *m.shape))
    assert ours["counts"] == ref["counts"].decode()


@given(small_masks)
@settings(max_examples=100, deadline=None)
def test_bbox_is_tight_xywh(m):
    box = masks.bbox_xywh(masks.encode(m), *m.shape)
    assert box == masks.mask_bbox_xywh(m)


def test_batch_encode_matches_single():
    rng = np.random.default_rng(0)
    ms = rng.random((5, 17, 23)) > 0.5
    assert masks.encode_batch(ms) == [masks.encode(x) for x in ms]
    assert masks.encode_batch(np.zeros((0, 4, 4), bool)) == []


def test_multi_part_polygons_union():
    polys = [[0, 0, 4, 0, 4, 4, 0, 4], [6, 6, 9, 6, 9, 9, 6, 9]]
    m = masks.decode(polys, 10, 10)
    assert m[:4, :4].all() and m[6:9, 6:9].all() and m.sum() == 16 + 9


@pytest.mark.parametrize("a,b,expected", [((0, 0), (0, 0), 1.0)])
def test_iou_of_empty_masks_is_one(a, b, expected):
    assert masks.iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == expected


@st.composite
def placed_crops(draw):
    """Masks of an image given as column-major crops at offsets: empty, full, touching every edge."""
    h, w = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    hc, wc = draw(st.integers(0, h)), draw(st.integers(0, w))
    n = draw(st.integers(1, 4))
    crops = draw(arrays(np.bool_, (n, wc, hc)))
    x0 = np.array(draw(st.lists(st.integers(0, w - wc), min_size=n, max_size=n)))
    y0 = np.array(draw(st.lists(st.integers(0, h - hc), min_size=n, max_size=n)))
    return h, w, crops, x0, y0


@given(placed_crops())
@settings(max_examples=400, deadline=None)
def test_encoding_crops_gives_pycocotools_bytes_of_the_full_masks(case):
    h, w, crops, x0, y0 = case
    got = masks.encode_crops(crops, x0, y0, h, w)
    for k in range(len(crops)):
        full = np.zeros((h, w), bool)
        full[y0[k]:y0[k] + crops.shape[2], x0[k]:x0[k] + crops.shape[1]] = crops[k].T
        assert got[k] == masks.encode(full)


def test_encoding_crops_of_large_masks_and_runs_across_columns():
    h, w = 3000, 4000  # run lengths past 2**20: many characters per number
    crops = np.zeros((3, 4000, 3000), bool)
    crops[1, 100:3900, :] = True  # whole columns: one run crossing every column boundary
    crops[2, 2000:2001, 1500:1501] = True
    got = masks.encode_crops(crops, np.zeros(3, int), np.zeros(3, int), h, w)
    for k in range(3):
        assert got[k] == masks.encode(crops[k].T)


@given(st.lists(st.integers(0, 2**40), max_size=12))
@settings(max_examples=200, deadline=None)
def test_counts_string_is_the_inverse_of_reading_counts(runs):
    assert masks.rle_counts(masks.counts_string(np.array(runs, np.int64))).tolist() == runs
