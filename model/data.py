"""Training and evaluation data from the store: the labeled samples of each split, an image's pixels read
(at the network's scale where it would shrink them anyway) and resized on uint8, the training dataset with its
flips, and the batches of like-shaped images. Labels become tensors in model.convert, the one place for that.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch
from sqlalchemy import select

from db import annotations
from db.annotations import HELDOUT_EVERY, is_heldout  # noqa: F401 - the split is the store's rule
from db.errors import UserError
from db.instances import Instances
from db.media import load_rgb
from db.schema import Category
from db.store import Store
from model.categories import CategoryMap
from model.config import ModelConfig
from model.convert import targets_from_instances

def store_category_map(store: Store) -> CategoryMap:
    with store.session() as s:
        return CategoryMap.from_categories(s.scalars(select(Category)).all())


@dataclasses.dataclass
class Sample:
    """One labeled image: its media path and its accepted labels."""

    image_id: int
    path: str
    width: int
    height: int
    instances: Instances
    skipped: list[str] = dataclasses.field(default_factory=list)  # rows left out, each named with its reason
    problem: str | None = None  # the problem recorded on the image (db.annotations.record_problems), if any


def labeled_samples(store: Store, heldout: bool) -> list[Sample]:
    """Images marked done, with their accepted labels (db.annotations.labeled_images); ``heldout`` picks the
    fixed held-out split or the training split."""
    return [Sample(li.image.id, str(store.media_file(li.image.media_path)), li.image.width, li.image.height,
                   li.instances, li.skipped, li.image.problem) for li in annotations.labeled_images(store, heldout)]


class UnusableImage(UserError):
    """An image the model cannot look at; the message is the reason, recorded on the image
    (db.annotations.record_problems) by whoever skips it."""


def read_pixels(path, height: int, width: int, fit: tuple[int, int] | None = None) -> np.ndarray:
    """A stored image's pixels (H, W, 3 uint8), or UnusableImage naming why they cannot be had: its media file
    is missing or cannot be decoded, or it is not of the size the store has for it. With ``fit`` (width,
    height), a JPEG may come decoded at 1/2, 1/4 or 1/8 of its size, still at least that large
    (``db.media.load_rgb``): for a network that shrinks it to about that size anyway."""
    try:
        pix = np.asarray(load_rgb(path, fit=fit))
    except FileNotFoundError:
        raise UnusableImage(f"its media file is missing ({path})") from None
    except Exception as e:  # noqa: BLE001 - whatever the decoder says, this image is the one that fails
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UnusableImage(f"its media file cannot be read ({type(e).__name__}: {first})") from None
    if fit is not None and pix.shape[:2] != (height, width):  # decoded at a reduced scale: 1/k, sides rounded up
        k = round(width / max(1, pix.shape[1]))
        if k in (2, 4, 8) and pix.shape[:2] == (-(-height // k), -(-width // k)):
            return pix
    if pix.shape[:2] != (height, width):
        raise UnusableImage(f"its media file is {pix.shape[1]}x{pix.shape[0]}, not {width}x{height} as the store "
                            "says")
    return pix


SHRINK_UNDER = 0.5  # an image the network shrinks less than this (at most twice its size) travels as it is


def train_size(config: ModelConfig, height: int, width: int) -> tuple[int, int]:
    """The largest (height, width) the network's transform (torchvision's GeneralizedRCNNTransform) gives a
    ``height`` x ``width`` image in training: its largest ``min_size_train`` on the shorter side, at most
    ``max_size`` on the longer, floored as its resize floors. An image the network shrinks by less than
    half keeps its size: it is small enough to travel, and the transform's one resize (with scale jitter)
    is then all the resampling it gets, as before photo-size images were shrunk here."""
    scale = min(1.0, max(config.min_size_train) / min(height, width), config.max_size / max(height, width))
    if scale >= SHRINK_UNDER:
        return height, width
    return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


def resized_image(pix: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """An (H, W, 3) uint8 image as a (3, h, w) uint8 tensor of ``size`` (h, w), resampled as the network's
    transform resamples (bilinear, corners not aligned, no antialiasing), on uint8 (never a float copy of
    the whole photo)."""
    if tuple(pix.shape[:2]) == tuple(size):
        return torch.from_numpy(np.array(pix, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    with warnings.catch_warnings():  # a decoded image is read-only; interpolate only reads it
        warnings.simplefilter("ignore", UserWarning)
        hwc = torch.from_numpy(np.asarray(pix, dtype=np.uint8))
    small = torch.nn.functional.interpolate(hwc.permute(2, 0, 1)[None], size=size, mode="bilinear",
                                            align_corners=False, antialias=False)  # (channels-last: fast)
    return small[0].contiguous()


def target_for(sample: Sample, cmap: CategoryMap, size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """A sample's torchvision targets (model.convert.targets_from_instances), for its image resized to
    ``size`` (height, width) when given."""
    return targets_from_instances(sample.instances, cmap, size)


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
    """Labeled samples as (image, target) with random horizontal flips. The flips come from torch's random
    generator: in the main process the run's seeded one, in a loader worker the one torch seeds per worker
    from the loader's generator, so workers do not repeat each other's flips and a run is reproducible.

    Images are (3, H, W) uint8 (a quarter of float's bytes through the loader's workers and pinned memory;
    the training loop makes them float on the device). With ``config``, each image and its targets come
    already resized to the largest size the network's transform gives it in training (``train_size``): a
    24 MP photo travels as about 1 MP, its masks as frames of that size, and the transform, choosing among
    ``min_size_train``, then only shrinks it a little further."""

    def __init__(self, samples: list[Sample], cmap: CategoryMap, augment: bool = True,
                 config: ModelConfig | None = None):
        self.samples, self.cmap, self.augment, self.config = samples, cmap, augment, config
        self.flip_perm = cmap.flip_permutation()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        """(image, target); for an image that cannot be read, (None, {"skipped": (image id, reason)}), which the
        training loop leaves out of its batch (model.train.train_loop)."""
        s = self.samples[i]
        size = train_size(self.config, s.height, s.width) if self.config is not None else (s.height, s.width)
        try:
            img = resized_image(read_pixels(s.path, s.height, s.width), size)
        except UnusableImage as e:
            return None, {"skipped": (s.image_id, str(e))}
        t = target_for(s, self.cmap, size)
        if self.augment and float(torch.rand(())) < 0.5:
            img, t = hflip(img, t, self.flip_perm)
        return img, t


def collate(batch):
    return tuple(zip(*batch))


class AspectBatches(torch.utils.data.Sampler):
    """Shuffled batches of images on the same side of square (landscape or portrait), so a batch is padded
    to little more than its images (torchvision's references group by aspect ratio the same way). Each
    epoch draws a new order from ``generator``; the images left over in each group at the end of an epoch
    are batched together, so every image is seen once per epoch and the count equals plain batching's."""

    def __init__(self, samples: list[Sample], batch_size: int, generator: torch.Generator, drop_last: bool,
                 order: torch.utils.data.DistributedSampler | None = None):
        self.groups = [0 if s.width >= s.height else 1 for s in samples]
        self.batch_size, self.generator, self.drop_last = batch_size, generator, drop_last
        self.order, self.epoch = order, 0  # order: this process's share of each epoch (several processes)

    def _indices(self) -> list[int]:
        if self.order is None:
            return torch.randperm(len(self.groups), generator=self.generator).tolist()
        self.order.set_epoch(self.epoch)
        self.epoch += 1
        return list(self.order)

    def __iter__(self):
        waiting: dict[int, list[int]] = {0: [], 1: []}
        for i in self._indices():
            group = waiting[self.groups[i]]
            group.append(i)
            if len(group) == self.batch_size:
                yield list(group)
                group.clear()
        rest = waiting[0] + waiting[1]
        for k in range(0, len(rest), self.batch_size):
            if len(rest[k:k + self.batch_size]) == self.batch_size or not self.drop_last:
                yield rest[k:k + self.batch_size]

    def __len__(self) -> int:
        n, b = (len(self.groups) if self.order is None else len(self.order)), self.batch_size
        return n // b if self.drop_last else -(-n // b)
