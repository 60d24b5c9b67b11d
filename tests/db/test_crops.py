"""db.crops (issue 19): masks held as what they cover, decoded and encoded without a full frame, exactly as
the full-frame codecs of db.masks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from db import crops, masks
from tests.helpers import uncompressed_rle

small_masks = st.integers(1, 24).flatmap(
    lambda h: st.integers(1, 24).flatmap(lambda w: arrays(np.bool_, (h, w)))
)

@given(small_masks)
@settings(max_examples=200, deadline=None)
def test_a_crop_decoded_from_rle_is_the_mask_and_encodes_to_the_same_bytes(m):
    h, w = m.shape
    rle = masks.encode(m)
    c = crops.decode_crop(rle, h, w)
    assert np.array_equal(c.full(h, w), m)
    assert c.area() == m.sum() and c.bbox_xywh() == masks.mask_bbox_xywh(m)
    if m.any():  # tight: its first and last rows and columns hold a pixel
        assert c.m[0].any() and c.m[-1].any() and c.m[:, 0].any() and c.m[:, -1].any()
    else:
        assert c.m.size == 0
    assert crops.encode_crop(c, h, w) == rle
    assert np.array_equal(crops.decode_crop(uncompressed_rle(m), h, w).full(h, w), m)
    assert np.array_equal(crops.crop_of(m).full(h, w), m)


@given(small_masks, small_masks, st.integers(-5, 30), st.integers(-5, 30))
@settings(max_examples=200, deadline=None)
def test_crop_union_minus_and_window_equal_the_full_frame_operations(a, b, bx, by):
    h, w = 32, 32
    fa = np.zeros((h, w), bool)
    fa[:a.shape[0], :a.shape[1]] = a
    ca = crops.crop_of(fa)
    cb = crops.clip(crops.Crop(bx, by, b.copy()), h, w)  # a brush dab past the image's edge is cut to it
    fb = cb.full(h, w)
    assert np.array_equal(crops.union(ca, cb).full(h, w), fa | fb)
    assert np.array_equal(crops.minus(ca, cb).full(h, w), fa & ~fb)
    keep = np.zeros((h, w), bool)
    keep[3:20, 5:17] = True
    assert np.array_equal(crops.within(ca, 5, 3, 17, 20).full(h, w), fa & keep)
    assert crops.crop_iou(ca, cb) == pytest.approx(masks.iou(fa, fb))
    assert crops.pixels_differing(ca, cb) == int((fa ^ fb).sum())


def test_polygons_decode_to_a_crop_without_a_full_frame_and_crops_trace_back_to_polygons():
    h, w = 4000, 6000  # a 24 MP photo: the crop is the object's box, not the frame
    poly = [[1000.0, 1000.0, 1400.0, 1000.0, 1400.0, 1300.0, 1000.0, 1300.0], [3000, 200, 3100, 200, 3100, 260]]
    c = crops.decode_crop(poly, h, w)
    assert (c.x, c.y) == (1000, 200) and c.nbytes < 2101 * 1101 + 1
    assert c.area() == masks.area(poly, h, w)
    small = crops.decode_crop([[10.0, 10.0, 40.0, 10.0, 40.0, 30.0, 10.0, 30.0]], 64, 64)
    back = crops.crop_to_polygons(small)
    assert np.array_equal(masks.decode(back, 64, 64), small.full(64, 64))


def test_a_crop_is_read_only_so_it_can_be_shared_by_undo_steps_and_copies():
    c = crops.crop_of(np.eye(5, dtype=bool))
    with pytest.raises(ValueError):
        c.m[0, 0] = False
    assert c.at(2.7, 2.1) and not c.at(3, 1) and not c.at(-1, 0) and not c.at(99, 99)


@pytest.mark.parametrize("bad", [{"size": [4, 4], "counts": "zz"}, {"size": [4, 4], "counts": [3, 20]},
                                 {"size": [5, 4], "counts": "04"}, {"size": [4, 4], "counts": 7}, [[1, 2, 3]]])
def test_decoding_a_bad_segmentation_to_a_crop_names_the_problem(bad):
    with pytest.raises(masks.MaskError):
        crops.decode_crop(bad, 4, 4)


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
    for band in (200, crops.BATCH_BAND_BYTES):  # in several chunks, and in one
        old, crops.BATCH_BAND_BYTES = crops.BATCH_BAND_BYTES, band
        try:
            got = crops.decode_crops(segs, h, w)
        finally:
            crops.BATCH_BAND_BYTES = old
        assert all(np.array_equal(c.full(h, w), m) for c, m in zip(got, truth))
        assert all(c.m.size == 0 or crops.tight(c) is c for c in got)
    bad = segs[:5] + [{"size": [h, w], "counts": "zz"}, [[1, 1, 10, 1, 10, 10]], None, 5]
    got = crops.decode_crops(bad, h, w)
    assert isinstance(got[5], masks.MaskError) and got[7] is None and isinstance(got[8], masks.MaskError)
    assert np.array_equal(got[6].full(h, w), masks.decode(bad[6], h, w))
    assert all(np.array_equal(c.full(h, w), m) for c, m in zip(got[:5], truth))
