"""Box- and point-prompted assist: the active model's heads answer "what object is in this box?" for a box a
labeler drew, and "what object is at this point?" for a click, on backbone features computed once per image and
cached (the way Segment Anything's predictor computes the image embedding once and answers many prompts).

For a box (image pixels, xyxy) the box head gives the class (unless the labeler chose one) and its score;
the mask head, through RoIAlign on exactly that box, gives the mask; the keypoint head, for a class with
keypoints, gives the keypoints. For a point, the RPN and the box head run on the cached features with no
score threshold, and the best-scoring detection whose box covers the point is answered as that box would be.
The answer is one ``Instances`` with box tight around its mask, source ``assist``, state ``proposed``. It
writes nothing.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import keypointrcnn_inference
from torchvision.ops import boxes as box_ops

from db.errors import UserError
from db.instances import Instances
from model.convert import instances_from_output
from model.data import UnusableImage

from model.predict import Predictor, _autocast, _channels_last, upload

ROUND0_REFUSED = ("assist needs a fine-tuned model: the round-0 COCO networks cannot be prompted with a box or a "
                  "point here; fine-tune once (Model tab or app.py train)")


class Features(NamedTuple):
    """One image's cached backbone output and the sizes needed to prompt the heads with it."""
    maps: dict  # FPN level name -> (1, C, h, w) tensor
    size: tuple[int, int]  # (height, width) after the net's resize, before padding
    original: tuple[int, int]  # (height, width) of the image as stored
    padded: tuple[int, int]  # (height, width) of the padded batch the backbone saw (the RPN's anchor strides)


CACHE_BYTES = 512 * 2 ** 20


class Assistant:
    """Answers box and point prompts with one predictor's network (shared with it: one copy in memory; its
    users take turns, annotator.background's one-model-run-at-a-time lock); keeps the features of the last few
    images (enough for the open image and the next ones warmed ahead of it), at most ``cache_images`` of them
    and ``cache_bytes`` together (the last one is kept whatever its size). On CUDA the network runs under
    fp16 autocast, as proposals do (model.predict), so the cached maps are fp16: the full model's maps of an
    800 x 1333 image take about 45 MB, against 90 MB in float32 on the CPU."""

    def __init__(self, predictor: Predictor, cache_images: int = 6, cache_bytes: int = CACHE_BYTES):
        if predictor.net is None:
            raise UserError(ROUND0_REFUSED)
        self.predictor = predictor
        self.net = predictor.net
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._size, self._budget = cache_images, cache_bytes
        self._lock = threading.Lock()

    def cached_bytes(self) -> int:
        """What the cached features take (device memory on a GPU)."""
        with self._lock:
            return sum(feature_bytes(f) for f in self._cache.values())

    def _autocast(self):
        return _autocast(self.predictor.device)

    def has_features(self, key) -> bool:
        """Whether the features of ``key`` are cached (without counting as a use)."""
        with self._lock:
            return key in self._cache

    @torch.inference_mode()
    def features(self, key, load: Callable[[], np.ndarray]) -> Features:
        """The features of an image, computed once per ``key``; ``load`` gives its pixels (H, W, 3 uint8) when
        they are needed. A hit counts as a use: the least recently used image leaves the cache first.
        UnusableImage for an image the model cannot look at."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        pixels = load()
        net, device = self.net, self.predictor.device
        h, w = pixels.shape[:2]
        why = self.predictor.input_problem(h, w)  # e.g. a 3000x2 image: its short side would scale to 0 pixels
        if why:
            raise UnusableImage(why)
        try:
            images, _ = net.transform([upload(pixels, device)])
        except RuntimeError as e:
            raise UnusableImage(f"the model cannot look at this {w}x{h} image ({str(e).splitlines()[0]})") from None
        batch = images.tensors
        if _channels_last(net):
            batch = batch.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            maps = net.backbone(batch)
        entry = Features(maps, tuple(images.image_sizes[0]), tuple(pixels.shape[:2]), tuple(batch.shape[-2:]))
        with self._lock:
            self._cache[key] = entry
            held = sum(feature_bytes(f) for f in self._cache.values())
            while len(self._cache) > 1 and (len(self._cache) > self._size or held > self._budget):
                held -= feature_bytes(self._cache.popitem(last=False)[1])
        return entry

    @torch.inference_mode()
    def box(self, key, load: Callable[[], np.ndarray], size_hw: tuple[int, int], box_xyxy: Sequence[float],
            category_id: int | None = None) -> Instances:
        """The model's instance for exactly this box (image pixels, x0 y0 x1 y1) on the image ``key`` of
        ``size_hw`` (height, width), whose pixels ``load`` gives when its features are not cached."""
        h, w = size_hw
        try:
            x0, y0, x1, y1 = (float(v) for v in box_xyxy)
        except (TypeError, ValueError):
            raise UserError("the box must be four numbers x0, y0, x1, y1 in image pixels") from None
        if not all(np.isfinite([x0, y0, x1, y1])):
            raise UserError("the box must be four finite numbers x0, y0, x1, y1 in image pixels")
        x0, x1 = sorted((min(max(x0, 0.0), w), min(max(x1, 0.0), w)))
        y0, y1 = sorted((min(max(y0, 0.0), h), min(max(y1, 0.0), h)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise UserError(f"the box is empty inside the {w}x{h} image: drag a box around the object")
        self._check_category(category_id)
        f = self.features(key, load)
        heads = self.net.roi_heads
        ry, rx = f.size[0] / f.original[0], f.size[1] / f.original[1]
        boxes = torch.tensor([[x0 * rx, y0 * ry, x1 * rx, y1 * ry]], dtype=torch.float32, device=self.predictor.device)
        with self._autocast():
            logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(f.maps, [boxes], [f.size])))
        probs = torch.softmax(logits.float(), -1)[0]
        usable = self._usable(probs.shape[0], probs.device)
        label = (self._label(category_id) if category_id is not None
                 else int(torch.argmax(torch.where(usable[1:], probs[1:], -1.0))) + 1)
        return self._instance(f, size_hw, boxes, label, probs[label].reshape(1))

    @torch.inference_mode()
    def point(self, key, load: Callable[[], np.ndarray], size_hw: tuple[int, int], x: float, y: float,
              category_id: int | None = None) -> Instances:
        """The model's best detection covering the point (x, y) (image pixels) on the image ``key`` of
        ``size_hw`` (height, width), however low its score, restricted to ``category_id`` when given: the
        RPN's proposals through the box head on the cached features, with no score threshold and no NMS (only
        the best one is wanted); its mask and keypoints as ``box`` gives them for its box. UserError when no
        detection covers the point."""
        h, w = size_hw
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            raise UserError("the point must be two numbers x, y in image pixels") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise UserError("the point must be two finite numbers x, y in image pixels")
        if not (0 <= x <= w and 0 <= y <= h):
            raise UserError(f"the point ({x:g}, {y:g}) is outside the {w}x{h} image")
        self._check_category(category_id)
        f = self.features(key, load)
        heads = self.net.roi_heads
        proposals = [self.proposals(f)]
        nothing = UserError(f"the model sees nothing at ({x:g}, {y:g}); drag a box around the object instead")
        if len(proposals[0]) == 0:  # (decode would not give one row of boxes per proposal)
            raise nothing
        with self._autocast():
            logits, deltas = heads.box_predictor(heads.box_head(heads.box_roi_pool(f.maps, proposals, [f.size])))
        proposals = [p.float() for p in proposals]  # (P, classes, 4):
        boxes = box_ops.clip_boxes_to_image(heads.box_coder.decode(deltas.float(), proposals), f.size)
        scores = torch.softmax(logits.float(), -1)
        px, py = x * f.size[1] / f.original[1], y * f.size[0] / f.original[0]
        covers = ((boxes[..., 0] <= px) & (px <= boxes[..., 2]) & (boxes[..., 1] <= py) & (py <= boxes[..., 3])
                  & (boxes[..., 2] - boxes[..., 0] >= 1e-2) & (boxes[..., 3] - boxes[..., 1] >= 1e-2))
        covers &= self._usable(covers.shape[1], covers.device)[None]  # (not the background class)
        if category_id is not None:
            covers[:, torch.arange(covers.shape[1], device=covers.device) != self._label(category_id)] = False
        if not bool(covers.any()):
            raise nothing
        best = int(torch.argmax(torch.where(covers, scores, torch.full_like(scores, -1.0))))
        i, label = divmod(best, scores.shape[1])
        return self._instance(f, size_hw, boxes[i, label].float().reshape(1, 4), label, scores[i, label].reshape(1))

    @torch.inference_mode()
    def proposals(self, f: Features) -> torch.Tensor:
        """The RPN's proposals (xyxy, resized image's pixels) on cached features, as the full network's run
        gives them. The anchor generator reads only the padded batch's shape from ``ImageList.tensors`` (its
        device and dtype come from the features), so a one-element tensor expanded to that shape stands in
        for the pixels, which are not kept."""
        stand_in = torch.empty((), device=self.predictor.device).expand(1, 3, *f.padded)
        with self._autocast():
            return self.net.rpn(ImageList(stand_in, [f.size]), f.maps)[0][0]

    def _check_category(self, category_id: int | None) -> None:
        p = self.predictor
        if category_id is not None and (category_id not in p.cmap.ids or p.category_of(p.cmap.label(category_id)) is None):
            raise UserError(f"no category with id {category_id} in the model's classes (a category added after "
                            "the model was trained needs a fine-tune first; or leave the class blank)")

    def _usable(self, n_labels: int, device) -> torch.Tensor:
        """Which of the model's labels (0 = background) are store categories it may answer with."""
        return torch.tensor([lab > 0 and self.predictor.category_of(lab) is not None for lab in range(n_labels)],
                            device=device)

    def _label(self, category_id: int) -> int:
        return self.predictor.cmap.label(category_id)

    def _instance(self, f: Features, size_hw: tuple[int, int], boxes: torch.Tensor, label: int,
                  score: torch.Tensor) -> Instances:
        """The mask (and keypoints, for a class with keypoints) of the model's ``label`` in exactly ``boxes``
        (one box, xyxy in the resized image's pixels), as one assist instance of ``score``."""
        cmap, heads, size = self.predictor.cmap, self.net.roi_heads, f.size
        out = {"boxes": boxes, "labels": torch.tensor([label]), "scores": score}
        with self._autocast():
            mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(f.maps, [boxes], [size])))
            kp_logits = (heads.keypoint_predictor(heads.keypoint_head(heads.keypoint_roi_pool(f.maps, [boxes], [size])))
                         if heads.has_keypoint() and label in cmap.keypoint_slices else None)
        if kp_logits is not None:
            out["keypoints"] = keypointrcnn_inference(kp_logits.float(), [boxes])[0][0]
        out = self.net.transform.postprocess([out], [size], [f.original])[0]  # boxes, keypoints to the image
        out["mask_probs"] = mask_logits[:, label].float().sigmoid()  # pasted into the box by instances_from_output
        inst = instances_from_output(out, size_hw[0], size_hw[1], self.predictor.category_of,
                                     cmap.keypoint_slices.get if "keypoints" in out else (lambda lab: None))
        inst.sources[0] = "assist"
        return inst


def feature_bytes(f: Features) -> int:
    """What one image's cached maps take."""
    return sum(t.numel() * t.element_size() for t in f.maps.values())
