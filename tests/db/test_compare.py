"""The one definition of 'changed' between two labels of an object (db.compare)."""

import numpy as np
import pytest

from db import compare, masks


def _box(x0, y0, x1, y1, size=20):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_and_pixels_differing_on_a_shifted_square():
    a, b = _box(2, 2, 12, 12), _box(4, 2, 14, 12)  # 100 pixels each, shifted by 2 columns
    assert compare.pixels_differing(a, b) == 40
    assert masks.iou(a, b) == pytest.approx(80 / 120)
    assert masks.iou(a, a) == 1.0 and compare.pixels_differing(a, a) == 0
    assert masks.iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0


def test_oks_is_one_for_exact_keypoints_and_ignores_unlabeled_ones():
    truth = [10, 10, 2, 20, 20, 1, 0, 0, 0]
    assert compare.oks(truth, truth, area=100) == pytest.approx(1.0)
    assert compare.oks([10, 10, 2, 20, 20, 2, 5, 5, 2], truth, area=100) == pytest.approx(1.0)
    assert compare.oks(None, truth, area=100) == 0.0
    assert compare.oks(truth, None, area=100) is None
    far = compare.oks([10, 10, 2, 40, 40, 2, 0, 0, 0], truth, area=100)
    assert far == pytest.approx(0.5, abs=1e-6)  # one of the two labeled keypoints is far off


def test_keypoints_to_fix_counts_moves_placements_and_clears():
    truth = [10, 10, 2, 20, 20, 2, 0, 0, 0]
    assert compare.keypoints_to_fix(truth, truth, 400, 0.75) == 0
    assert compare.keypoints_to_fix([10, 10, 2, 30, 30, 2, 0, 0, 0], truth, 400, 0.75) == 1  # moved
    assert compare.keypoints_to_fix([10, 10, 2, 0, 0, 0, 0, 0, 0], truth, 400, 0.75) == 1  # placed
    assert compare.keypoints_to_fix([10, 10, 2, 20, 20, 2, 5, 5, 2], truth, 400, 0.75) == 1  # cleared
    assert compare.keypoints_to_fix(None, truth, 400, 0.75) == 2
    assert compare.keypoints_to_fix([1, 1, 2], None, 400, 0.75) == 1


def test_keypoints_moved_between_two_saved_labels():
    a = [10, 10, 2, 20, 20, 1, 0, 0, 0]
    assert compare.keypoints_moved(a, a) == 0
    assert compare.keypoints_moved(a, [10.2, 10, 2, 20, 20, 1, 0, 0, 0]) == 0  # under half a pixel
    assert compare.keypoints_moved(a, [13, 10, 2, 20, 20, 2, 0, 0, 0]) == 2  # moved; made visible
    assert compare.keypoints_moved(a, [10, 10, 2, 0, 0, 0, 7, 7, 2]) == 2  # cleared; placed
    assert compare.keypoints_moved(None, a) == 2 and compare.keypoints_moved(None, None) == 0
    assert compare.keypoints_moved(a, [1, 1, 2]) == 3  # the category's keypoint list changed


def test_sigmas_are_cocos_for_persons():
    assert len(compare.keypoint_sigmas(17)) == 17 and compare.keypoint_sigmas(17)[0] == pytest.approx(0.026)
    assert list(compare.keypoint_sigmas(3)) == [compare.OTHER_SIGMA] * 3
