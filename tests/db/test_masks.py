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
