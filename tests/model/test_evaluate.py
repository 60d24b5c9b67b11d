"""Held-out evaluation and the promotion rule: better only beyond the noise of the held-out split."""

import types

import numpy as np
import pytest

from model import evaluate as ev
from model.categories import CategoryMap


def _cmap():
    return CategoryMap.from_categories([types.SimpleNamespace(id=1, name="box", keypoints=None, skeleton=None,
                                                              supercategory="")])


def _case(n_images=12, shift=0.0, seed=0, miss_every=0, det_seed=None):
    """Ground truth of ``n_images`` with two boxes each, and detections shifted by ``shift`` pixels times a
    random factor (drawn from ``det_seed``), those of every ``miss_every``-th image left out."""
    rng = np.random.default_rng(seed)
    det_rng = np.random.default_rng(det_seed) if det_seed is not None else rng
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 100, "height": 100, "file_name": str(i)})
        for k in range(2):
            x, y = rng.uniform(5, 50, 2)
            w, h = rng.uniform(20, 40, 2)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
            if miss_every and i % miss_every == 0:
                continue
            xs = x + shift * det_rng.uniform(0.0, 2.0)
            dets.append({"image_id": i, "category_id": 1, "bbox": [xs, y, w, h], "score": float(rng.uniform(0.5, 1)),
                         "segmentation": [[xs, y, xs + w, y, xs + w, y + h, xs, y + h]]})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}
    return gt, dets


def test_ap_on_every_image_once_is_pycocotools_ap():
    gt, dets = _case(shift=4.0)
    e = ev.coco_evaluation(gt, dets, _cmap())
    again = e.resampled(np.arange(e.n_images))
    assert again["bbox"] == pytest.approx(e.metrics["bbox"]) and again["segm"] == pytest.approx(e.metrics["segm"])
    assert 0.2 < e.metrics["bbox"] < 0.95


def test_resampling_repeats_images():
    gt, dets = _case(n_images=4, miss_every=2)  # images 2 and 4 have no detections
    e = ev.coco_evaluation(gt, dets, _cmap())
    assert e.resampled(np.array([0, 0, 2, 2]))["bbox"] == pytest.approx(1.0)  # only found objects
    assert e.resampled(np.array([1, 3, 1, 3]))["bbox"] == 0.0


def test_a_clearly_better_model_is_promoted_and_an_equal_one_is_not():
    gt, good = _case(shift=0.0)
    _, poor = _case(shift=8.0, miss_every=3)
    cmap = _cmap()
    e_good, e_poor = ev.coco_evaluation(gt, good, cmap), ev.coco_evaluation(gt, poor, cmap)
    assert ev.better_beyond_noise(e_good, e_poor).better
    same = ev.better_beyond_noise(e_good, ev.coco_evaluation(gt, good, cmap))
    assert not same.better and same.share == 0.0 and "0 % of 200 resamples of the 12 held-out images" in same.reason()


def test_a_gain_that_is_luck_of_the_images_is_noise():
    """Two models as good as each other (the same errors, drawn differently): one scores higher on these
    images, by chance, and is not promoted."""
    cmap = _cmap()
    found = []
    for det_seed in range(1, 6):
        gt, dets = _case(n_images=8, shift=4.0, seed=1, det_seed=det_seed)
        found.append(ev.coco_evaluation(gt, dets, cmap))
    found.sort(key=lambda e: ev.summary_score(e.metrics))
    low, high = found[1], found[-2]
    assert ev.summary_score(high.metrics) > ev.summary_score(low.metrics)
    c = ev.better_beyond_noise(high, low)
    assert not c.better and 0 < c.share < ev.PROMOTE_SHARE


def test_a_continuation_is_promoted_unless_the_active_model_is_better_beyond_the_noise():
    """The bar for the active version trained further on at least its labels (CONTINUE_SHARE) is lower than
    for a new start (PROMOTE_SHARE): a little better passes it, a clearly worse one and an equal one do not."""
    cmap = _cmap()
    gt, a = _case(n_images=12, shift=4.0, seed=3, det_seed=1)
    _, b = _case(n_images=12, shift=4.5, seed=3, det_seed=2)  # a little worse: higher on 88 % of resamples
    _, c = _case(n_images=12, shift=8.0, seed=3, det_seed=2, miss_every=3)  # clearly worse
    better, worse, poor = (ev.coco_evaluation(gt, d, cmap) for d in (a, b, c))
    new_start = ev.better_beyond_noise(better, worse)
    cont = ev.better_beyond_noise(better, worse, needs=ev.CONTINUE_SHARE)
    assert cont.share == new_start.share and ev.CONTINUE_SHARE <= cont.share < ev.PROMOTE_SHARE
    assert cont.better and not new_start.better and "promotion needs 10 %" in cont.reason()
    assert not ev.better_beyond_noise(poor, better, needs=ev.CONTINUE_SHARE).better
    assert not ev.better_beyond_noise(better, ev.coco_evaluation(gt, a, cmap), needs=ev.CONTINUE_SHARE).better
