"""Box-prompted assist: the active model's heads answer "what object is in this box?" for a box a labeler
drew, on backbone features computed once per image and cached (the way Segment Anything's predictor computes
the image embedding once and answers many prompts).

For a box (image pixels, xyxy) the box head gives the class (unless the labeler chose one) and its score;
the mask head, through RoIAlign on exactly that box, gives the mask; the keypoint head, for a class with
keypoints, gives the keypoints. The answer is one ``Instances`` with box tight around its mask, source
``assist``, state ``proposed``. It writes nothing.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Sequence

import numpy as np
import torch
from torchvision.models.detection.roi_heads import keypointrcnn_inference

from db.errors import UserError
from db.instances import Instances
from model.convert import instances_from_output
from model.data import image_tensor
from model.predict import Predictor


class Assistant:
    """Answers box prompts with one predictor's network; keeps the features of the last few images."""

    def __init__(self, predictor: Predictor, cache_images: int = 4):
        if predictor.net is None:
            raise UserError("box assist needs a fine-tuned model: the round-0 COCO networks cannot be prompted "
                            "with a box here; fine-tune once (Model tab or app.py train)")
        self.predictor = predictor
        self.net = predictor.net
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._size = cache_images
        self._lock = threading.Lock()

    @torch.inference_mode()
    def features(self, key, load: Callable[[], np.ndarray]):
        """(features, transformed size, original size) of an image, computed once per ``key``; ``load``
        gives its pixels (H, W, 3 uint8) when they are needed."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        pixels = load()
        net, device = self.net, self.predictor.device
        images, _ = net.transform([image_tensor(pixels).to(device)])
        feats = net.backbone(images.tensors)
        entry = (feats, images.image_sizes[0], tuple(pixels.shape[:2]))
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return entry

    @torch.inference_mode()
    def box(self, key, load: Callable[[], np.ndarray], size_hw: tuple[int, int], box_xyxy: Sequence[float],
            category_id: int | None = None) -> Instances:
        """The model's instance for exactly this box (image pixels, x0 y0 x1 y1) on the image ``key`` of
        ``size_hw`` (height, width), whose pixels ``load`` gives when its features are not cached."""
        cmap = self.predictor.cmap
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
        if category_id is not None and category_id not in cmap.ids:
            raise UserError(f"no category with id {category_id} in the model's classes")
        feats, size, original = self.features(key, load)
        heads = self.net.roi_heads
        ry, rx = size[0] / original[0], size[1] / original[1]
        boxes = torch.tensor([[x0 * rx, y0 * ry, x1 * rx, y1 * ry]], dtype=torch.float32, device=self.predictor.device)
        pooled = heads.box_head(heads.box_roi_pool(feats, [boxes], [size]))
        logits, _ = heads.box_predictor(pooled)
        probs = torch.softmax(logits.float(), -1)[0]
        label = cmap.label(category_id) if category_id is not None else int(torch.argmax(probs[1:])) + 1
        out = {"boxes": boxes, "labels": torch.tensor([label]), "scores": probs[label].reshape(1)}
        mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(feats, [boxes], [size])))
        out["masks"] = mask_logits[:, label:label + 1].sigmoid()
        if heads.has_keypoint() and label in cmap.keypoint_slices:
            kp_logits = heads.keypoint_predictor(heads.keypoint_head(heads.keypoint_roi_pool(feats, [boxes], [size])))
            out["keypoints"] = keypointrcnn_inference(kp_logits, [boxes])[0][0]
        out = self.net.transform.postprocess([out], [size], [original])[0]
        inst = instances_from_output(out, h, w, lambda lab: cmap.category_id(lab),
                                     cmap.keypoint_slices.get if "keypoints" in out else (lambda lab: None))
        inst.sources[0] = "assist"
        return inst
