"""All conversion between ``db.instances.Instances`` and tensors sits here.

Boxes: ``Instances`` (like COCO and the store) hold xywh; torchvision's tensors hold xyxy. Category ids <->
contiguous labels through ``CategoryMap``. Masks: uint8 (N, H, W) targets; model outputs are soft
(N, 1, H, W) masks thresholded on the device and encoded to COCO RLE in one call.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from db import crops
from db import masks as mask_codec
from db.instances import Instances
from model.categories import CategoryMap


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def instances_from_output(out: dict[str, torch.Tensor], height: int, width: int,
                          label_to_cat: Callable[[int], int | None], kp_slice: Callable[[int], slice | None],
                          mask_threshold: float = 0.5) -> Instances:
    """One image's detections as proposals: store category ids (labels the store does not have are dropped
    before any mask work), RLE masks, keypoints cut to each category's list (visibility 2), box tight around
    the mask (the detector's box when the mask is empty or absent).

    ``out`` holds boxes (xyxy, image pixels), labels, scores, optionally keypoints (N, K, 3) and either
    ``mask_probs`` (N, M, M), the mask head's probabilities (pasted into their boxes here, all at once:
    ``paste_masks``), or ``masks`` (N, 1, H, W) already pasted, as torchvision's own postprocess gives them.
    Each tensor is copied to the host once."""
    labels_t = out["labels"]
    labels = labels_t.cpu().numpy()
    cats = [label_to_cat(int(lab)) for lab in labels]
    keep = [i for i, c in enumerate(cats) if c is not None]
    inst = Instances(height, width)
    if not keep:
        return inst
    idx = torch.tensor(keep, dtype=torch.int64, device=labels_t.device) if len(keep) < len(labels) else None
    pick = (lambda t: t if idx is None else t.index_select(0, idx))
    boxes_t = pick(out["boxes"]).float()
    boxes, scores = boxes_t.cpu().numpy(), pick(out["scores"]).float().cpu().numpy()
    labels = labels[keep]
    if "mask_probs" in out:
        crops, x0, y0 = paste_masks(pick(out["mask_probs"]), boxes_t, height, width, mask_threshold)
        rles: list = mask_codec.encode_crops(crops, x0, y0, height, width)
    elif "masks" in out:  # full-size probabilities: thresholded and made column-major on the device
        binary = (pick(out["masks"])[:, 0] > mask_threshold).transpose(1, 2).contiguous().cpu().numpy()
        zero = np.zeros(len(keep), np.int64)
        rles = mask_codec.encode_crops(binary, zero, zero, height, width)
    else:
        rles = [None] * len(keep)
    kps_all = pick(out["keypoints"]).float().cpu().numpy() if "keypoints" in out else None
    for j, lab in enumerate(labels):
        sl = kp_slice(int(lab)) if kps_all is not None else None
        kps = None
        if sl is not None:
            k = kps_all[j, sl].copy()
            k[:, 2] = 2
            kps = [round(float(v), 2) for v in k.reshape(-1)]
        add_detection(inst, cats[keep[j]], boxes[j], float(scores[j]), rles[j], kps)
    return inst


def add_detection(inst: Instances, category_id: int, box_xyxy, score: float, rle: dict | None,
                  keypoints: list[float] | None) -> int:
    """Append a model detection (box given as xyxy) as a proposal; its box becomes tight around its mask."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    i = inst.add(category_id, [x0, y0, x1 - x0, y1 - y0], segmentation=rle, keypoints=keypoints, score=score,
                 source="model", state="proposed")
    inst.bboxes[i] = inst.tight_bbox(i)
    return i


def targets_from_instances(inst: Instances, cmap: CategoryMap,
                           size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Training targets: xyxy boxes, contiguous labels, uint8 masks, (N, K, 3) keypoints over every
    keypoint category's channels. Crowd regions, unknown categories and boxes under a pixel are left out; a
    box- or keypoint-only label gets its box as mask. With ``size`` (height, width): the targets of the image
    resized to that size, boxes and keypoints scaled and masks resampled as torchvision's transform does
    (``mask_at``: no frame of the image's own size is made)."""
    h, w = inst.height, inst.width
    oh, ow = size if size is not None else (h, w)
    sx, sy = ow / w, oh / h
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
        k = np.zeros((cmap.num_keypoints, 3), np.float32)
        given = inst.keypoints_xyv(i)
        if given is not None and label in slices:
            k[slices[label]] = given[: slices[label].stop - slices[label].start]
        k[:, 0] *= sx
        k[:, 1] *= sy
        boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
        labels.append(label)
        masks.append(mask_at(inst, i, oh, ow))
        kps.append(k)
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, oh, ow), dtype=torch.uint8),
    }
    if cmap.num_keypoints:
        t["keypoints"] = torch.from_numpy(np.stack(kps)) if kps else torch.zeros((0, cmap.num_keypoints, 3))
    return t


def mask_at(inst: Instances, i: int, height: int, width: int) -> np.ndarray:
    """Instance ``i``'s mask as a uint8 (``height``, ``width``) frame of its image resized to that size,
    sampled as torch's nearest interpolation samples the full mask (what torchvision's transform does to
    mask targets), but made from the mask's crop (decoded now, not kept on the instance): no frame of the
    image's own size. A box- or keypoint-only instance gets its box."""
    h, w = inst.height, inst.width
    seg = inst.segmentations[i]
    if seg:
        c = crops.decode_crop(seg, h, w)
        x0, y0, m = c.x, c.y, c.m
    else:  # the box stands in for the mask
        x, y, bw, bh = (float(v) for v in inst.bboxes[i])
        x0, y0 = max(0, int(x)), max(0, int(y))
        m = np.ones((max(0, min(h, int(np.ceil(y + bh))) - y0), max(0, min(w, int(np.ceil(x + bw))) - x0)), bool)
    rows, cols = _nearest(h, height), _nearest(w, width)
    r = np.flatnonzero((rows >= y0) & (rows < y0 + m.shape[0]))
    c = np.flatnonzero((cols >= x0) & (cols < x0 + m.shape[1]))
    out = np.zeros((height, width), np.uint8)
    if r.size and c.size:
        out[np.ix_(r, c)] = m[np.ix_(rows[r] - y0, cols[c] - x0)]
    return out


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """For each of ``n_out`` samples, the index of the one of ``n_in`` that torch's nearest interpolation takes."""
    if n_in == n_out:
        return np.arange(n_in)
    src = torch.nn.functional.interpolate(torch.arange(n_in, dtype=torch.float32)[None, None], size=n_out)
    return src[0, 0].numpy().astype(np.int64)


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


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float = 0.5,
                max_elements: int = 1 << 25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mask head's (N, M, M) probabilities resized into their boxes (N, 4, xyxy in image pixels) and
    thresholded, as torchvision's ``paste_masks_in_image`` does mask by mask (a one-pixel zero border, the
    box scaled to match, truncated to whole pixels, bilinear resize, the part inside the image), but for all
    masks at once on their device and only over each box: returns ``(crops, x0, y0)``, the crops (N, Wc, Hc)
    bool column-major on the host (one copy), for ``db.masks.encode_crops``. Chunks keep the work under
    ``max_elements`` values."""
    n, m = probs.shape[0], probs.shape[-1]
    if n == 0:
        return np.zeros((0, 0, 0), bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
    dev = probs.device
    padded = torch.nn.functional.pad(probs.reshape(n, m, m).float(), (1, 1, 1, 1))
    p = m + 2
    b = boxes.float()
    scale = float(p) / m
    half_w, half_h = (b[:, 2] - b[:, 0]) * 0.5 * scale, (b[:, 3] - b[:, 1]) * 0.5 * scale
    cx, cy = (b[:, 2] + b[:, 0]) * 0.5, (b[:, 3] + b[:, 1]) * 0.5
    bx0, bx1 = (cx - half_w).to(torch.int64), (cx + half_w).to(torch.int64)  # truncated, as torchvision does
    by0, by1 = (cy - half_h).to(torch.int64), (cy + half_h).to(torch.int64)
    bw, bh = (bx1 - bx0 + 1).clamp(min=1), (by1 - by0 + 1).clamp(min=1)
    x0, x1 = bx0.clamp(min=0), (bx1 + 1).clamp(max=width)
    y0, y1 = by0.clamp(min=0), (by1 + 1).clamp(max=height)
    cw, ch = (x1 - x0).clamp(min=0), (y1 - y0).clamp(min=0)
    wc, hc = int(cw.max()), int(ch.max())  # one host sync for the crop size
    out = torch.zeros((n, wc, hc), dtype=torch.bool, device=dev)
    step = max(1, max_elements // max(1, max(p, hc) * max(wc, 1)))
    for s in range(0, n, step):
        e = min(n, s + step)
        # source coordinates of each output column (row) in the padded mask, as bilinear resizing with
        # align_corners=False computes them: scale * (i + 0.5) - 0.5, never below 0
        u = (x0[s:e, None] - bx0[s:e, None]) + torch.arange(wc, device=dev)[None]  # (k, wc) in the resized box
        v = (y0[s:e, None] - by0[s:e, None]) + torch.arange(hc, device=dev)[None]
        sx = ((float(p) / bw[s:e, None].float()) * (u.float() + 0.5) - 0.5).clamp(min=0)
        sy = ((float(p) / bh[s:e, None].float()) * (v.float() + 0.5) - 0.5).clamp(min=0)
        ix0, iy0 = sx.to(torch.int64).clamp(max=p - 1), sy.to(torch.int64).clamp(max=p - 1)
        lx, ly = sx - ix0, sy - iy0
        ix1, iy1 = (ix0 + 1).clamp(max=p - 1), (iy0 + 1).clamp(max=p - 1)
        src = padded[s:e]  # (k, p, p): rows y, columns x
        k = e - s
        # along x for every padded row, then along y: (k, p, wc) -> (k, hc, wc)
        gx0 = torch.gather(src, 2, ix0[:, None, :].expand(k, p, wc))
        gx1 = torch.gather(src, 2, ix1[:, None, :].expand(k, p, wc))
        rows = gx0 * (1 - lx)[:, None, :] + gx1 * lx[:, None, :]
        gy0 = torch.gather(rows, 1, iy0[:, :, None].expand(k, hc, wc))
        gy1 = torch.gather(rows, 1, iy1[:, :, None].expand(k, hc, wc))
        val = gy0 * (1 - ly)[:, :, None] + gy1 * ly[:, :, None]
        inside = ((torch.arange(wc, device=dev)[None, None, :] < cw[s:e, None, None])
                  & (torch.arange(hc, device=dev)[None, :, None] < ch[s:e, None, None]))
        out[s:e] = ((val > threshold) & inside).transpose(1, 2)  # column-major crops
    return out.cpu().numpy(), x0.cpu().numpy(), y0.cpu().numpy()
