"""Training keeps nothing it decoded (issue 19): a sample holds its labels as RLE, each target's full-frame
masks are made for that step only, so memory stays flat however many images are labeled."""

import numpy as np
import torch

from model.categories import CategoryMap
from model.convert import targets_from_instances
from model.data import Sample, TrainDataset
from model.synthetic import photo_instances, write_photo


class _Cat:
    def __init__(self, id_, name):
        self.id, self.name, self.keypoints, self.skeleton = id_, name, [], []


def test_a_pass_over_the_training_data_leaves_no_decoded_mask_on_any_sample(tmp_path):
    cmap = CategoryMap.from_categories([_Cat(3, "blob")])
    samples = []
    for k in range(3):
        path = write_photo(tmp_path / f"{k}.jpg", 320, 200, seed=k)
        inst = photo_instances(320, 200, 6, 3, seed=k, radius=(5, 40))
        for i in range(len(inst)):
            inst.states[i], inst.sources[i], inst.scores[i] = "accepted", "human", None
        samples.append(Sample(k + 1, str(path), 320, 200, inst))
    ds = TrainDataset(samples, cmap)
    for _ in range(2):  # two epochs
        for i in range(len(ds)):
            img, t = ds[i]
            assert t["masks"].shape == (6, 200, 320) and t["masks"].dtype == torch.uint8
            assert int(t["masks"].sum()) > 0
    for s in samples:
        assert all(c is None for c in s.instances._crops)  # nothing decoded stays on a long-lived sample
        assert all(isinstance(seg, dict) for seg in s.instances.segmentations)


def test_targets_equal_the_masks_whether_or_not_a_crop_was_decoded_before():
    inst = photo_instances(300, 200, 4, 1, seed=2, radius=(5, 50))
    cmap = CategoryMap.from_categories([_Cat(1, "blob")])
    cold = targets_from_instances(inst, cmap)["masks"].numpy()
    for i in range(len(inst)):
        inst.crop(i)
    warm = targets_from_instances(inst, cmap)["masks"].numpy()
    assert np.array_equal(cold, warm) and cold.sum() == sum(inst.area(i) for i in range(len(inst)))
