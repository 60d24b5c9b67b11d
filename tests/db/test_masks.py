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


# --- masks as crops (issue 19): held as what they cover, never as a full frame ---------------------------
@given(small_masks)
@settings(max_examples=200, deadline=None)
def test_a_crop_decoded_from_rle_is_the_mask_and_encodes_to_the_same_bytes(m):
    h, w = m.shape
    rle = masks.encode(m)
    c = masks.decode_crop(rle, h, w)
    assert np.array_equal(c.full(h, w), m)
    assert c.area() == m.sum() and c.bbox_xywh() == masks.mask_bbox_xywh(m)
    if m.any():  # tight: its first and last rows and columns hold a pixel
        assert c.m[0].any() and c.m[-1].any() and c.m[:, 0].any() and c.m[:, -1].any()
    else:
        assert c.m.size == 0
    assert masks.encode_crop(c, h, w) == rle
    assert np.array_equal(masks.decode_crop(uncompressed_rle(m), h, w).full(h, w), m)
    assert np.array_equal(masks.crop_of(m).full(h, w), m)


@given(small_masks, small_masks, st.integers(-5, 30), st.integers(-5, 30))
@settings(max_examples=200, deadline=None)
def test_crop_union_minus_and_window_equal_the_full_frame_operations(a, b, bx, by):
    h, w = 32, 32
    fa = np.zeros((h, w), bool)
    fa[:a.shape[0], :a.shape[1]] = a
    ca = masks.crop_of(fa)
    cb = masks.clip(masks.Crop(bx, by, b.copy()), h, w)  # a brush dab past the image's edge is cut to it
    fb = cb.full(h, w)
    assert np.array_equal(masks.union(ca, cb).full(h, w), fa | fb)
    assert np.array_equal(masks.minus(ca, cb).full(h, w), fa & ~fb)
    keep = np.zeros((h, w), bool)
    keep[3:20, 5:17] = True
    assert np.array_equal(masks.within(ca, 5, 3, 17, 20).full(h, w), fa & keep)
    assert masks.crop_iou(ca, cb) == pytest.approx(masks.iou(fa, fb))
    assert masks.pixels_differing(ca, cb) == int((fa ^ fb).sum())


def test_polygons_decode_to_a_crop_without_a_full_frame_and_crops_trace_back_to_polygons():
    h, w = 4000, 6000  # a 24 MP photo: the crop is the object's box, not the frame
    poly = [[1000.0, 1000.0, 1400.0, 1000.0, 1400.0, 1300.0, 1000.0, 1300.0], [3000, 200, 3100, 200, 3100, 260]]
    c = masks.decode_crop(poly, h, w)
    assert (c.x, c.y) == (1000, 200) and c.nbytes < 2101 * 1101 + 1
    assert c.area() == masks.area(poly, h, w)
    small = masks.decode_crop([[10.0, 10.0, 40.0, 10.0, 40.0, 30.0, 10.0, 30.0]], 64, 64)
    back = masks.crop_to_polygons(small)
    assert np.array_equal(masks.decode(back, 64, 64), small.full(64, 64))


def test_a_crop_is_read_only_so_it_can_be_shared_by_undo_steps_and_copies():
    c = masks.crop_of(np.eye(5, dtype=bool))
    with pytest.raises(ValueError):
        c.m[0, 0] = False
    assert c.at(2.7, 2.1) and not c.at(3, 1) and not c.at(-1, 0) and not c.at(99, 99)


@pytest.mark.parametrize("bad", [{"size": [4, 4], "counts": "zz"}, {"size": [4, 4], "counts": [3, 20]},
                                 {"size": [5, 4], "counts": "04"}, {"size": [4, 4], "counts": 7}, [[1, 2, 3]]])
def test_decoding_a_bad_segmentation_to_a_crop_names_the_problem(bad):
    with pytest.raises(masks.MaskError):
        masks.decode_crop(bad, 4, 4)


def test_many_masks_decode_together_as_each_alone_and_a_bad_one_is_named():
    rng = np.random.default_rng(3)
    h, w = 30, 40
    truth = []
    for _ in range(400):
        m = np.zeros((h, w), bool)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        m[y0:rng.integers(y0, h + 1), x0:rng.integers(x0, w + 1)] = rng.random() < 0.9
        m &= rng.random((h, w)) < rng.choice([0.3, 1.0])
        truth.append(m)
    segs = [masks.encode(m) for m in truth]
    for band in (200, masks.BATCH_BAND_BYTES):  # in several chunks, and in one
        old, masks.BATCH_BAND_BYTES = masks.BATCH_BAND_BYTES, band
        try:
            got = masks.decode_crops(segs, h, w)
        finally:
            masks.BATCH_BAND_BYTES = old
        assert all(np.array_equal(c.full(h, w), m) for c, m in zip(got, truth))
        assert all(c.m.size == 0 or masks.tight(c) is c for c in got)
    bad = segs[:5] + [{"size": [h, w], "counts": "zz"}, [[1, 1, 10, 1, 10, 10]], None, 5]
    got = masks.decode_crops(bad, h, w)
    assert isinstance(got[5], masks.MaskError) and got[7] is None and isinstance(got[8], masks.MaskError)
    assert np.array_equal(got[6].full(h, w), masks.decode(bad[6], h, w))
    assert all(np.array_equal(c.full(h, w), m) for c, m in zip(got[:5], truth))
