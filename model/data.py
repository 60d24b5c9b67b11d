"""All conversion between the store's COCO rows and tensors sits here.

Boxes: the store holds COCO xywh; tensors hold xyxy. Category ids <-> contiguous labels via CategoryMap.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch
from sqlalchemy import select

from db import annotations
from db import masks as mask_codec
from db.annotations import HELDOUT_EVERY, is_heldout  # noqa: F401 - the split is the store's rule
from db.media import load_rgb
from db.schema import Category
from db.store import Store
from model.categories import CategoryMap

def store_category_map(store: Store) -> CategoryMap:
    with store.session() as s:
        return CategoryMap.from_categories(s.scalars(select(Category)).all())


@dataclasses.dataclass
class Sample:
    """One labeled image: its media path and its accepted annotations as plain COCO dicts."""

    image_id: int
    path: str
    width: int
    height: int
    annotations: list[dict[str, Any]]
    skipped: list[str] = dataclasses.field(default_factory=list)  # rows left out, each named with its reason


def labeled_samples(store: Store, heldout: bool) -> list[Sample]:
    """Images marked done, with their accepted labels as COCO dicts (db.annotations.labeled_images);
    ``heldout`` picks the fixed held-out split or the training split."""
    out = []
    for li in annotations.labeled_images(store, heldout):
        im = li.image
        anns = [dict(id=a.id, category_id=a.category_id, bbox=list(a.bbox), segmentation=a.segmentation,
                     iscrowd=a.iscrowd, keypoints=a.keypoints, area=a.area, num_keypoints=a.num_keypoints)
                for a in li.annotations]
        out.append(Sample(im.id, str(store.media_file(im.media_path)), im.width, im.height, anns, li.skipped))
    return out


def image_tensor(pix: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pix, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def target_for(sample: Sample, cmap: CategoryMap) -> dict[str, torch.Tensor]:
    """COCO dicts -> torchvision targets (xyxy boxes, labels, uint8 masks, (N, K, 3) keypoints)."""
    h, w = sample.height, sample.width
    boxes, labels, masks, kps = [], [], [], []
    slices = cmap.keypoint_slices
    for a in sample.annotations:
        if a["iscrowd"] or a["category_id"] not in cmap.ids:
            continue  # crowd regions are not instances; torchvision has no ignore regions
        x, y, bw, bh = (float(v) for v in a["bbox"])
        if bw < 1 or bh < 1:
            continue
        label = cmap.label(a["category_id"])
        if a["segmentation"]:
            m = mask_codec.decode(a["segmentation"], h, w)
        else:  # keypoint- or box-only label: the box stands in for the mask
            m = np.zeros((h, w), bool)
            m[int(y):int(np.ceil(y + bh)), int(x):int(np.ceil(x + bw))] = True
        k = np.zeros((cmap.num_keypoints, 3), np.float32)
        if a["keypoints"] and label in slices:
            given = np.asarray(a["keypoints"], np.float32).reshape(-1, 3)
            k[slices[label]] = given[: slices[label].stop - slices[label].start]
        boxes.append([x, y, x + bw, y + bh])
        labels.append(label)
        masks.append(m)
        kps.append(k)
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)) if masks
        else torch.zeros((0, h, w), dtype=torch.uint8),
    }
    if cmap.num_keypoints:
        t["keypoints"] = torch.from_numpy(np.stack(kps)) if kps else torch.zeros((0, cmap.num_keypoints, 3))
    return t


def hflip(img: torch.Tensor, target: dict[str, torch.Tensor], flip_perm: list[int]):
    """Horizontal flip of an image and its target, swapping left/right keypoints."""
    w = img.shape[-1]
    img = img.flip(-1)
    t = dict(target)
    b = target["boxes"].clone()
    b[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    t["boxes"] = b
    t["masks"] = target["masks"].flip(-1)
    if "keypoints" in target:
        k = target["keypoints"][:, flip_perm].clone()
        vis = k[..., 2] > 0
        k[..., 0] = torch.where(vis, w - k[..., 0], k[..., 0])
        t["keypoints"] = k
    return img, t


class TrainDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[Sample], cmap: CategoryMap, augment: bool = True, seed: int = 0):
        self.samples, self.cmap, self.augment = samples, cmap, augment
        self.flip_perm = cmap.flip_permutation()
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        img = image_tensor(np.asarray(load_rgb(s.path)))
        t = target_for(s, self.cmap)
        if self.augment and self.rng.random() < 0.5:
            img, t = hflip(img, t, self.flip_perm)
        return img, t


def collate(batch):
    return tuple(zip(*batch))
