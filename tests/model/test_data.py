"""Training keeps nothing it decoded (issue 19): a sample holds its labels as RLE, each target's full-frame
masks are made for that step only, so memory stays flat however many images are labeled."""

import numpy as np
import torch
from PIL import Image

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


def test_a_photo_travels_at_the_training_size_with_its_targets_as_the_transform_would_make_them(tmp_path):
    """Issue 22: the dataset resizes each photo (uint8) and its targets to the largest size the network's
    transform gives it in training; masks, boxes and keypoints equal what torchvision's resize makes of the
    full-size ones, and the transform then does not enlarge the image."""
    from torchvision.models.detection.transform import resize_boxes, resize_keypoints

    from db.instances import Instances
    from model import build as mb
    from model.config import TINY
    from model.data import train_size

    person = _Cat(1, "person")
    person.keypoints = ["a", "b"]
    cmap = CategoryMap.from_categories([_Cat(3, "blob"), person])
    w, h = 700, 466
    path = write_photo(tmp_path / "p.jpg", w, h, seed=4)
    inst = photo_instances(w, h, 5, 3, seed=4, radius=(3, 90))
    kp = Instances.from_coco([{"category_id": 1, "bbox": [101.5, 40.25, 60, 150.5], "segmentation": None,
                               "iscrowd": 0, "keypoints": [120.5, 60.5, 2, 140, 170.75, 1]}], h, w)
    inst = Instances.cat([inst, kp])  # a keypoint-only person: its box stands in for its mask
    sample = Sample(1, str(path), w, h, inst)
    size = train_size(TINY, h, w)
    assert size == (112, 168)  # the largest of min_size_train (112) on the short side: 700 x 466 * 112 / 466
    # an image the network shrinks by less than half travels as it is (one resampling, the transform's)
    assert train_size(TINY, 128, 128) == (128, 128) and train_size(TINY, 200, 300) == (200, 300)
    assert train_size(TINY, 230, 300) == (112, 146)
    img, t = TrainDataset([sample], cmap, augment=False, config=TINY)[0]
    assert img.dtype == torch.uint8 and img.shape == (3, *size)
    full = targets_from_instances(inst, cmap)
    masks = torch.nn.functional.interpolate(full["masks"][:, None].float(), size=size)[:, 0].byte()
    assert torch.equal(t["masks"], masks) and t["masks"].shape[0] == len(full["masks"])
    assert torch.allclose(t["boxes"], resize_boxes(full["boxes"], (h, w), size))
    assert torch.allclose(t["keypoints"], resize_keypoints(full["keypoints"], (h, w), size))
    pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB")))
    ref = torch.nn.functional.interpolate(pixels.permute(2, 0, 1)[None].float() / 255, size=size, mode="bilinear",
                                          align_corners=False)[0]
    assert (img.float() / 255 - ref).abs().max() <= 1.5 / 255  # (uint8 rounding)
    net = mb.build(TINY, cmap).train()
    resized, _ = net.transform([img.float() / 255], [{k: v.clone() for k, v in t.items()}])
    assert max(resized.image_sizes[0]) <= max(size) + 1  # the transform does not enlarge it
