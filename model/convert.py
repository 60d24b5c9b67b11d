"""All conversion between ``db.instances.Instances`` and tensors sits here.

Boxes: ``Instances`` (like COCO and the store) hold xywh; torchvision's tensors hold xyxy. Category ids <->
contiguous labels through ``CategoryMap``. Masks: uint8 (N, H, W) targets; model outputs are soft
(N, 1, H, W) masks thresholded on the device and encoded to COCO RLE in one call.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from db import masks as mask_codec
from db.instances import Instances
from model.categories import CategoryMap


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def instances_from_output(out: dict[str, torch.Tensor], height: int, width: int,
                          label_to_cat: Callable[[int], int | None], kp_slice: Callable[[int], slice | None],
                          mask_threshold: float = 0.5) -> Instances:
    """One image's torchvision detections as proposals: store category ids (labels the store does not have
    are dropped), RLE masks, keypoints cut to each category's list (visibility 2), box tight around the mask
    (the detector's box when the mask is empty or absent)."""
    labels = out["labels"].cpu().numpy()
    boxes = out["boxes"].float().cpu().numpy()
    scores = out["scores"].float().cpu().numpy()
    masks = out.get("masks")
    if masks is not None:
        binary = (masks[:, 0] > mask_threshold).to("cpu", torch.uint8).numpy()  # threshold on the device
        rles: list = mask_codec.encode_batch(binary)
    else:
        rles = [None] * len(labels)
    kps_t = out.get("keypoints")
    inst = Instances(height, width)
    for i, lab in enumerate(labels):
        cat = label_to_cat(int(lab))
        if cat is None:
            continue
        sl = kp_slice(int(lab)) if kps_t is not None else None
        kps = None
        if sl is not None:
            k = kps_t[i, sl].float().cpu().numpy().copy()
            k[:, 2] = 2
            kps = [round(float(v), 2) for v in k.reshape(-1)]
        add_detection(inst, cat, boxes[i], float(scores[i]), rles[i], kps)
    return inst


def add_detection(inst: Instances, category_id: int, box_xyxy, score: float, rle: dict | None,
                  keypoints: list[float] | None) -> int:
    """Append a model detection (box given as xyxy) as a proposal; its box becomes tight around its mask."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    i = inst.add(category_id, [x0, y0, x1 - x0, y1 - y0], segmentation=rle, keypoints=keypoints, score=score,
                 source="model", state="proposed")
    inst.bboxes[i] = inst.tight_bbox(i)
    return i


def targets_from_instances(inst: Instances, cmap: CategoryMap) -> dict[str, torch.Tensor]:
    """Training targets: xyxy boxes, contiguous labels, uint8 masks, (N, K, 3) keypoints over every
    keypoint category's channels. Crowd regions, unknown categories and boxes under a pixel are left out; a
    box- or keypoint-only label gets its box as mask."""
    h, w = inst.height, inst.width
    boxes, labels, masks, kps = [], [], [], []
    slices = cmap.keypoint_slices
    for i in range(len(inst)):
        cid = inst.category_ids[i]
        if inst.iscrowd[i] or cid not in cmap.ids:
            continue  # crowd regions are not instances; torchvision has no ignore regions
        x, y, bw, bh = (float(v) for v in inst.bboxes[i])
        if bw < 1 or bh < 1:
            continue
        label = cmap.label(cid)
        m = inst.mask(i)
        if m is None:  # keypoint- or box-only label: the box stands in for the mask
            m = np.zeros((h, w), bool)
            m[int(y):int(np.ceil(y + bh)), int(x):int(np.ceil(x + bw))] = True
        k = np.zeros((cmap.num_keypoints, 3), np.float32)
        given = inst.keypoints_xyv(i)
        if given is not None and label in slices:
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


def merge_person_keypoints(inst: Instances, kp_out: dict[str, torch.Tensor], person_id: int,
                           iou_threshold: float = 0.5, min_score: float = 0.5) -> Instances:
    """A person found by both round-0 networks becomes one proposal with its mask and its keypoints (matched
    greedily by box IoU); a person only the keypoint network found is added with keypoints and box."""
    from torchvision.ops import box_iou

    kb = kp_out["boxes"].float().cpu()
    ks = kp_out["scores"].float().cpu()
    kk = kp_out["keypoints"].float().cpu().numpy()
    sel = ks >= min_score
    kb, ks, kk = kb[sel], ks[sel], kk[sel.numpy()]
    persons = [i for i in range(len(inst)) if inst.category_ids[i] == person_id]
    used: set[int] = set()

    def flat(j: int) -> list[float]:
        k = kk[j].copy()
        k[:, 2] = 2
        return [round(float(v), 2) for v in k.reshape(-1)]

    if persons and len(kb):
        pboxes = torch.from_numpy(xywh_to_xyxy(inst.boxes()[persons])).float()
        iou = box_iou(pboxes, kb).numpy()
        order = np.argsort(-np.array([inst.scores[i] for i in persons]))
        for pi in order:
            j = int(np.argmax(np.where([q in used for q in range(len(kb))], -1, iou[pi])))
            if iou[pi, j] >= iou_threshold and j not in used:
                used.add(j)
                inst.keypoints[persons[pi]] = flat(j)
    for j in range(len(kb)):
        if j not in used:
            add_detection(inst, person_id, kb[j].numpy(), float(ks[j]), None, flat(j))
    return inst
