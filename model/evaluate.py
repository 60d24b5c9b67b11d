"""COCOeval of a model on the fixed held-out split: AP for bbox, segm and keypoints."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from db.compare import keypoint_sigmas
from model.categories import CategoryMap
from model.data import Sample, UnusableImage


def ground_truth(samples: Sequence[Sample], cmap: CategoryMap) -> dict:
    images = [{"id": s.image_id, "width": s.width, "height": s.height, "file_name": str(s.image_id)} for s in samples]
    anns = [s.instances.coco(i, s.image_id) for s in samples for i in range(len(s.instances))]
    cats = [{"id": cid, "name": n, **({"keypoints": list(k)} if k else {})}
            for cid, n, k in zip(cmap.ids, cmap.names, cmap.keypoints)]
    return {"images": images, "annotations": anns, "categories": cats}


def _quiet(fn):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


@dataclasses.dataclass
class Evaluation:
    """A model's AP on held-out images, with what resampling those images needs: per metric the evaluated
    ``COCOeval`` objects (one per keypoint category for keypoints; None where the model found nothing, which
    scores 0 on any resample)."""

    metrics: dict[str, float | None]
    evals: dict[str, list[COCOeval | None]]
    n_images: int

    def resampled(self, index: np.ndarray) -> dict[str, float]:
        """The metrics on the held-out images picked by ``index`` (positions, repeats allowed)."""
        return {k: float(np.mean([_ap_on(ev, index) if ev is not None else 0.0 for ev in evs]))
                for k, evs in self.evals.items() if evs}


def _ap_on(ev: COCOeval, index: np.ndarray) -> float:
    """AP@[.5:.95] (all areas, the largest detection count) of an evaluated COCOeval over a resample of its
    images: pycocotools' own accumulation over the per-image results, laid out as if the picked images
    (repeats included) were the evaluated ones."""
    pe = ev._paramsEval
    n_img, n_area = len(pe.imgIds), len(pe.areaRng)
    n_cat = len(pe.catIds) if pe.useCats else 1
    sub = copy.copy(ev)
    sub.evalImgs = [ev.evalImgs[(k * n_area + a) * n_img + i] for k in range(n_cat) for a in range(n_area)
                    for i in index]
    sub._paramsEval = copy.copy(pe)
    sub._paramsEval.imgIds = list(range(len(index)))
    p = copy.copy(sub._paramsEval)
    p.areaRng, p.areaRngLbl, p.maxDets = [pe.areaRng[0]], [pe.areaRngLbl[0]], [pe.maxDets[-1]]
    _quiet(lambda: sub.accumulate(p))
    prec = sub.eval["precision"]
    prec = prec[prec > -1]
    return max(0.0, float(prec.mean())) if prec.size else 0.0


def coco_ap(gt_dict: dict, dets: list[dict], cmap: CategoryMap) -> dict[str, float | None]:
    """AP@[.5:.95] for bbox and segm over all categories, keypoints over keypoint categories (mean)."""
    return coco_evaluation(gt_dict, dets, cmap).metrics


def coco_evaluation(gt_dict: dict, dets: list[dict], cmap: CategoryMap, only: set[int] | None = None) -> Evaluation:
    """``coco_ap`` with the evaluations kept for resampling; with ``only``, of those category ids alone."""
    if only is not None:
        gt_dict = dict(gt_dict, categories=[c for c in gt_dict["categories"] if c["id"] in only],
                       annotations=[a for a in gt_dict["annotations"] if a["category_id"] in only])
        dets = [d for d in dets if d["category_id"] in only]
    gt = COCO()
    gt.dataset = copy.deepcopy(gt_dict)
    _quiet(gt.createIndex)
    result: dict[str, float | None] = {"bbox": None, "segm": None, "keypoints": None}
    evals: dict[str, list[COCOeval | None]] = {}
    n = len(gt_dict["images"])
    if not gt.dataset["annotations"]:
        return Evaluation(result, evals, n)
    if not dets:
        result.update(bbox=0.0, segm=0.0)
        evals.update(bbox=[None], segm=[None])
        if cmap.num_keypoints:
            result["keypoints"] = 0.0
            evals["keypoints"] = [None]
        return Evaluation(result, evals, n)
    dt = _quiet(lambda: gt.loadRes(copy.deepcopy([d for d in dets if d.get("segmentation")] or dets)))
    for iou_type in ("bbox", "segm"):
        ev = COCOeval(gt, dt, iou_type)
        _quiet(lambda: (ev.evaluate(), ev.accumulate(), ev.summarize()))
        result[iou_type] = max(0.0, float(ev.stats[0]))
        evals[iou_type] = [ev]
    kp_scores, kp_evals = [], []
    for label, sl in cmap.keypoint_slices.items():
        cid = cmap.ids[label - 1]
        if only is not None and cid not in only:
            continue
        if not any(a.get("keypoints") and a["category_id"] == cid for a in gt.dataset["annotations"]):
            continue
        kd = [d for d in dets if d["category_id"] == cid and "keypoints" in d]
        if not kd:
            kp_scores.append(0.0)
            kp_evals.append(None)
            continue
        kdt = _quiet(lambda: gt.loadRes(copy.deepcopy(kd)))
        ev = COCOeval(gt, kdt, "keypoints")
        ev.params.catIds = [cid]
        n_kp = sl.stop - sl.start
        ev.params.kpt_oks_sigmas = keypoint_sigmas(n_kp)
        _quiet(lambda: (ev.evaluate(), ev.accumulate(), ev.summarize()))
        kp_scores.append(max(0.0, float(ev.stats[0])))
        kp_evals.append(ev)
    if kp_scores:
        result["keypoints"] = float(np.mean(kp_scores))
        evals["keypoints"] = kp_evals
    return Evaluation(result, evals, n)


def evaluate(predictor, samples: Sequence[Sample]) -> dict[str, float | None]:
    """Run ``predictor`` (model.predict.Predictor) on the held-out samples and score it against them."""
    return evaluation(predictor, samples).metrics


def evaluation(predictor, samples: Sequence[Sample]) -> Evaluation:
    """``evaluate``, with the evaluations kept for resampling (``better_beyond_noise``)."""
    gt, dets = detections(predictor, samples)
    return coco_evaluation(gt, dets, predictor.cmap)


def detections(predictor, samples: Sequence[Sample], skipped: dict[int, str] | None = None) -> tuple[dict, list[dict]]:
    """The held-out ground truth (COCO dict, of the predictor's categories) and the predictor's detections
    on it, to score with ``coco_evaluation`` (several ways, without predicting again). An image the
    predictor cannot look at (``input_problem``), whose file cannot be read, or that the network fails on
    alone is left out of both, with its reason in ``skipped`` (image id -> reason)."""
    cmap = predictor.cmap
    skipped = {} if skipped is None else skipped
    kept: list[Sample] = []
    dets = []
    for k in range(0, len(samples), 8):
        chunk, pixels = [], []
        for s in samples[k:k + 8]:
            try:
                why = predictor.input_problem(s.height, s.width)
                if why:
                    raise UnusableImage(why)
                pixels.append(predictor.read(s.path, s.height, s.width))  # (a photo: at the model's scale)
                chunk.append(s)
            except UnusableImage as e:
                skipped[s.image_id] = str(e)
        sizes = [(s.height, s.width) for s in chunk]
        preds, failed = predictor.predict_each(pixels, None, sizes) if pixels else ([], {})
        for j, (s, p) in enumerate(zip(chunk, preds)):
            if j in failed:
                skipped[s.image_id] = failed[j]
                continue
            kept.append(s)
            dets += [{k: v for k, v in d.items() if k != "segmentation" or v}  # keypoint-only: no mask
                     for d in p.to_coco(s.image_id, with_score=True)]
    return ground_truth(kept, cmap), dets


def restricted(gt: dict, dets: list[dict], image_ids: set[int]) -> tuple[dict, list[dict]]:
    """Ground truth and detections (``detections``) of only these images."""
    return ({**gt, "images": [im for im in gt["images"] if im["id"] in image_ids],
             "annotations": [a for a in gt["annotations"] if a["image_id"] in image_ids]},
            [d for d in dets if d["image_id"] in image_ids])


@dataclasses.dataclass
class Comparison:
    better: bool
    share: float  # of resamples in which the new model scored higher
    resamples: int
    images: int
    needs: float = 0.9  # the share it needed

    def reason(self) -> str:
        return (f"better than the active model on {100 * self.share:.0f} % of {self.resamples} resamples of the "
                f"{self.images} held-out images (promotion needs {100 * self.needs:.0f} %)")


PROMOTE_SHARE = 0.9  # a new start (another size, other weights) must beat the active model beyond the noise
CONTINUE_SHARE = 0.1  # a continuation of the active model on at least its labels: unless it is worse beyond it
RESAMPLES = 200


def better_beyond_noise(new: Evaluation, old: Evaluation, resamples: int = RESAMPLES, seed: int = 0,
                        needs: float = PROMOTE_SHARE) -> Comparison:
    """Is ``new`` better than ``old`` beyond the noise of the held-out split? A paired bootstrap: the
    held-out images are resampled with replacement ``resamples`` times, both models scored (the mean of
    their APs, ``summary_score``) on each resample, and ``new`` wins when it scores higher on at least
    ``needs`` of them. Both evaluations must be of the same held-out images."""
    n = new.n_images
    if n != old.n_images:
        raise ValueError("the two evaluations are of different held-out images")
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        a, b = summary_score(new.resampled(idx)), summary_score(old.resampled(idx))
        wins += a is not None and (b is None or a > b)
    share = wins / max(1, resamples)
    return Comparison(share >= needs, share, resamples, n, needs)


def summary_score(metrics: dict[str, float | None] | None) -> float | None:
    """One number to compare versions: the mean of the APs that exist."""
    if not metrics:
        return None
    vals = [v for k, v in metrics.items() if k in ("bbox", "segm", "keypoints") and v is not None]
    return float(np.mean(vals)) if vals else None
