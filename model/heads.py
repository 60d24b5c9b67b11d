"""The region heads of every network built here: torchvision's ``RoIHeads`` with the keypoint head run only
on the boxes of classes that have keypoints, in training and in inference.

torchvision runs the keypoint head on every positive proposal (training) and every detection (inference),
whatever its class. In a store where only ``person`` has keypoints, a car or a dog pays for the largest
head of the network (eight 512-channel convolutions on the full model: 40 % of CPU inference) and trains
nothing (its keypoint targets are all invisible). The box and mask parts are torchvision's own methods and
losses; only the choice of which boxes reach the keypoint head differs. Parameter names are torchvision's, so
checkpoints and COCO weights load unchanged.
"""

from __future__ import annotations

import torch
from torchvision.models.detection.roi_heads import (RoIHeads, fastrcnn_loss, keypointrcnn_inference,
                                                    keypointrcnn_loss, maskrcnn_inference, maskrcnn_loss)


class KeypointAwareRoIHeads(RoIHeads):
    """``keypoint_labels``: the model labels whose class has keypoints (empty: no keypoint head is run)."""

    keypoint_labels: torch.Tensor

    @classmethod
    def adopt(cls, heads: RoIHeads, keypoint_labels: list[int]) -> "KeypointAwareRoIHeads":
        """Turn torchvision's ``heads`` (as built, modules and settings kept) into these heads."""
        heads.__class__ = cls
        heads.register_buffer("keypoint_labels", torch.tensor(sorted(keypoint_labels), dtype=torch.int64),
                              persistent=False)
        return heads

    def forward(self, features, proposals, image_shapes, targets=None):
        matched = labels = None
        if self.training:
            if targets is None:
                raise ValueError("training needs targets")
            proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        losses: dict[str, torch.Tensor] = {}
        result: list[dict[str, torch.Tensor]] = []
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        else:
            boxes, scores, det_labels = self.postprocess_detections(class_logits, box_regression, proposals,
                                                                    image_shapes)
            result = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, det_labels)]

        if self.has_mask():
            if self.training:
                rois, idx = self._positives(proposals, matched, labels, lambda lab: lab > 0)
                logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, rois, image_shapes)))
                losses["loss_mask"] = maskrcnn_loss(logits, rois, [t["masks"] for t in targets],
                                                    [t["labels"] for t in targets], idx)
            else:
                rois = [r["boxes"] for r in result]
                logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, rois, image_shapes)))
                for probs, r in zip(maskrcnn_inference(logits, [r["labels"] for r in result]), result):
                    r["masks"] = probs

        if self.has_keypoint():
            if self.training:
                rois, idx = self._positives(proposals, matched, labels, self._has_keypoints)
                logits = self._keypoint_logits(features, rois, image_shapes)
                losses["loss_keypoint"] = keypointrcnn_loss(logits, rois, [t["keypoints"] for t in targets], idx)
            else:
                self._keypoints_of_detections(features, result, image_shapes)
        return result, losses

    def _has_keypoints(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.isin(labels, self.keypoint_labels)

    @staticmethod
    def _positives(proposals, matched, labels, keep):
        """Per image, the sampled proposals whose label passes ``keep``, and their matched target indices."""
        picked = [torch.where(keep(lab))[0] for lab in labels]
        return ([p[i] for p, i in zip(proposals, picked)], [m[i] for m, i in zip(matched, picked)])

    def _keypoint_logits(self, features, rois, image_shapes):
        return self.keypoint_predictor(self.keypoint_head(self.keypoint_roi_pool(features, rois, image_shapes)))

    def _keypoints_of_detections(self, features, result, image_shapes) -> None:
        """``keypoints`` (N, K, 3) and ``keypoints_scores`` (N, K) of every detection, computed only for
        detections of keypoint classes (zeros elsewhere: no class without keypoints reads them)."""
        picked = [torch.where(self._has_keypoints(r["labels"]))[0] for r in result]
        rois = [r["boxes"][i] for r, i in zip(result, picked)]
        k = self.keypoint_predictor.kps_score_lowres.out_channels
        if sum(len(i) for i in picked):
            points, scores = keypointrcnn_inference(self._keypoint_logits(features, rois, image_shapes), rois)
        else:
            points = [r.new_zeros((0, k, 3)) for r in rois]
            scores = [r.new_zeros((0, k)) for r in rois]
        for r, i, pts, sc in zip(result, picked, points, scores):
            n = len(r["boxes"])
            r["keypoints"] = r["boxes"].new_zeros((n, k, 3)).index_copy_(0, i, pts.to(r["boxes"].dtype))
            r["keypoints_scores"] = r["boxes"].new_zeros((n, k)).index_copy_(0, i, sc.to(r["boxes"].dtype))
