"""COCOeval of a model on the fixed held-out split: AP for bbox, segm and keypoints."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from db.media import load_rgb
from model.categories import CategoryMap
from model.data import Sample

COCO_PERSON_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                               .89, .89]) / 10.0


def ground_truth(samples: Sequence[Sample], cmap: CategoryMap) -> dict:
    images = [{"id": s.image_id, "width": s.width, "height": s.height, "file_name": str(s.image_id)} for s in samples]
    anns = [s.instances.coco(i, s.image_id) for s in samples for i in range(len(s.instances))]
    cats = [{"id": cid, "name": n, **({"keypoints": list(k)} if k else {})}
            for cid, n, k in zip(cmap.ids, cmap.names, cmap.keypoints)]
    return {"images": images, "annotations": anns, "categories": cats}


def _quiet(fn):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


def coco_ap(gt_dict: dict, dets: list[dict], cmap: CategoryMap) -> dict[str, float | None]:
    """AP@[.5:.95] for bbox and segm over all categories, keypoints over keypoint categories (mean)."""
    gt = COCO()
    gt.dataset = copy.deepcopy(gt_dict)
    _quiet(gt.createIndex)
    result: dict[str, float | None] = {"bbox": None, "segm": None, "keypoints": None}
    if not gt.dataset["annotations"]:
        return result
    if not dets:
        result.update(bbox=0.0, segm=0.0)
        if cmap.num_keypoints:
            result["keypoints"] = 0.0
        return result
    dt = _quiet(lambda: gt.loadRes(copy.deepcopy([d for d in dets if d.get("segmentation")] or dets)))
    for iou_type in ("bbox", "segm"):
        ev = COCOeval(gt, dt, iou_type)
        _quiet(lambda: (ev.evaluate(), ev.accumulate(), ev.summarize()))
        result[iou_type] = max(0.0, float(ev.stats[0]))
    kp_scores = []
    for label, sl in cmap.keypoint_slices.items():
        cid = cmap.ids[label - 1]
        if not any(a.get("keypoints") and a["category_id"] == cid for a in gt.dataset["annotations"]):
            continue
        kd = [d for d in dets if d["category_id"] == cid and "keypoints" in d]
        if not kd:
            kp_scores.append(0.0)
            continue
        kdt = _quiet(lambda: gt.loadRes(copy.deepcopy(kd)))
        ev = COCOeval(gt, kdt, "keypoints")
        ev.params.catIds = [cid]
        n = sl.stop - sl.start
        ev.params.kpt_oks_sigmas = COCO_PERSON_SIGMAS if n == 17 else np.full(n, 0.07)
        _quiet(lambda: (ev.evaluate(), ev.accumulate(), ev.summarize()))
        kp_scores.append(max(0.0, float(ev.stats[0])))
    if kp_scores:
        result["keypoints"] = float(np.mean(kp_scores))
    return result


def evaluate(predictor, samples: Sequence[Sample]) -> dict[str, float | None]:
    """Run ``predictor`` (model.predict.Predictor) on the held-out samples and score it against them."""
    cmap = predictor.cmap
    gt = ground_truth(samples, cmap)
    dets = []
    for k in range(0, len(samples), 8):
        chunk = samples[k:k + 8]
        preds = predictor.predict([np.asarray(load_rgb(s.path)) for s in chunk])
        for s, p in zip(chunk, preds):
            dets += [{k: v for k, v in d.items() if k != "segmentation" or v}  # keypoint-only: no mask
                     for d in p.to_coco(s.image_id, with_score=True)]
    return coco_ap(gt, dets, cmap)


def summary_score(metrics: dict[str, float | None] | None) -> float | None:
    """One number to compare versions: the mean of the APs that exist."""
    if not metrics:
        return None
    vals = [v for k, v in metrics.items() if k in ("bbox", "segm", "keypoints") and v is not None]
    return float(np.mean(vals)) if vals else None
