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
        rles: list = [None] * len(keep)
        for at, crops, x0, y0 in paste_masks(pick(out["mask_probs"]), boxes_t, height, width, mask_threshold):
            for j, rle in zip(at, mask_codec.encode_crops(crops, x0, y0, height, width)):
                rles[j] = rle
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
                max_elements: int = 1 << 25) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The mask head's (N, M, M) probabilities resized into their boxes (N, 4, xyxy in image pixels) and
    thresholded, as torchvision's ``paste_masks_in_image`` does mask by mask (a one-pixel zero border, the
    box scaled to match, truncated to whole pixels, bilinear resize, the part inside the image), but many
    masks at once on their device and only over each box. Returns groups ``(at, crops, x0, y0)``: the
    positions ``at`` of the group's masks among the N, their crops (k, Wc, Hc) bool column-major on the host,
    for ``db.masks.encode_crops``, and their top-left corners. A group holds masks of like crop size (sorted
    by size), so one full-image detection among many small ones does not make every crop image-sized, and
    no group holds more than ``max_elements`` values (a crop larger than that is a group of its own)."""
    n, m = probs.shape[0], probs.shape[-1]
    if n == 0:
        return []
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
    sizes = torch.stack([cw, ch]).cpu().numpy()  # one host sync for the crop sizes
    x0_h, y0_h = x0.cpu().numpy(), y0.cpu().numpy()
    groups = []
    for at in _like_sized(sizes[0], sizes[1], max_elements, p):
        sel = torch.as_tensor(at, device=dev)
        wc, hc = int(sizes[0][at].max()), int(sizes[1][at].max())
        crops = _paste(padded.index_select(0, sel), bx0[sel], by0[sel], bw[sel], bh[sel], x0[sel], y0[sel],
                       cw[sel], ch[sel], wc, hc, threshold)
        groups.append((at, crops.cpu().numpy(), x0_h[at], y0_h[at]))
    return groups


def _like_sized(cw: np.ndarray, ch: np.ndarray, max_elements: int, rows: int) -> list[np.ndarray]:
    """Positions grouped for pasting: sorted by crop area, a group grows while its allocation (k x widest x
    tallest, at least ``rows`` tall: the resize's intermediate) stays under ``max_elements`` and under twice
    its crops' own pixels plus 4096 a crop (a little padding, not a full image's worth for a small box)."""
    order = np.argsort(cw.astype(np.int64) * ch, kind="stable")
    groups, cur, w, h, area = [], [], 0, 0, 0
    for i in order:
        nw, nh, na = max(w, int(cw[i])), max(h, int(ch[i])), area + int(cw[i]) * int(ch[i])
        alloc = (len(cur) + 1) * nw * max(nh, rows)
        if cur and (alloc > max_elements or alloc > 2 * na + 4096 * (len(cur) + 1)):
            groups.append(np.array(cur, np.int64))
            cur, nw, nh, na = [], int(cw[i]), int(ch[i]), int(cw[i]) * int(ch[i])
        cur.append(int(i))
        w, h, area = nw, nh, na
    if cur:
        groups.append(np.array(cur, np.int64))
    return groups


def _paste(padded, bx0, by0, bw, bh, x0, y0, cw, ch, wc: int, hc: int, threshold: float,
           rows_at_once: int = 1 << 22) -> torch.Tensor:
    """One group of ``paste_masks``: (k, wc, hc) bool column-major crops on the masks' device. The resize is
    separable: along x once for every padded row, then along y a band of output rows at a time (at most
    ``rows_at_once`` values of float work per band), so a crop as large as a 24 MP photo needs no full-size
    float arrays."""
    dev, p, k = padded.device, padded.shape[-1], padded.shape[0]
    # source coordinates of each output column (row) in the padded mask, as bilinear resizing with
    # align_corners=False computes them: scale * (i + 0.5) - 0.5, never below 0
    u = (x0[:, None] - bx0[:, None]) + torch.arange(wc, device=dev)[None]  # (k, wc) in the resized box
    sx = ((float(p) / bw[:, None].float()) * (u.float() + 0.5) - 0.5).clamp(min=0)
    ix0 = sx.to(torch.int64).clamp(max=p - 1)
    lx = sx - ix0
    ix1 = (ix0 + 1).clamp(max=p - 1)
    # along x for every padded row: (k, p, wc)
    gx0 = torch.gather(padded, 2, ix0[:, None, :].expand(k, p, wc))
    gx1 = torch.gather(padded, 2, ix1[:, None, :].expand(k, p, wc))
    rows = gx0 * (1 - lx)[:, None, :] + gx1 * lx[:, None, :]
    out = torch.empty((k, hc, wc), dtype=torch.bool, device=dev)
    cols_inside = torch.arange(wc, device=dev)[None, None, :] < cw[:, None, None]
    band = max(1, rows_at_once // max(1, k * wc))
    for r0 in range(0, hc, band):  # then along y, a band of output rows at a time: (k, rows, wc)
        r1 = min(hc, r0 + band)
        v = (y0[:, None] - by0[:, None]) + torch.arange(r0, r1, device=dev)[None]
        sy = ((float(p) / bh[:, None].float()) * (v.float() + 0.5) - 0.5).clamp(min=0)
        iy0 = sy.to(torch.int64).clamp(max=p - 1)
        ly = sy - iy0
        iy1 = (iy0 + 1).clamp(max=p - 1)
        gy0 = torch.gather(rows, 1, iy0[:, :, None].expand(k, r1 - r0, wc))
        gy1 = torch.gather(rows, 1, iy1[:, :, None].expand(k, r1 - r0, wc))
        val = gy0 * (1 - ly)[:, :, None] + gy1 * ly[:, :, None]
        inside = cols_inside & (torch.arange(r0, r1, device=dev)[None, :, None] < ch[:, None, None])
        out[:, r0:r1] = (val > threshold) & inside
    return out.transpose(1, 2)  # column-major crops
