"""How far one instance is from another: the one definition of "changed" used by the per-version review
measures (db.stats: proposal as proposed against label as saved) and by the simulated labeler of
bench/loop.py (proposal against exact ground truth). Mask IoU is ``db.masks.iou``.

Keypoints are COCO's flat [x, y, v] * K lists; a keypoint is labeled when v > 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# COCO's per-keypoint OKS sigmas for its 17 person keypoints; any other keypoint category gets 0.07 each.
COCO_PERSON_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                               .89, .89]) / 10.0
OTHER_SIGMA = 0.07
MOVED_PX = 0.5  # a keypoint saved more than this far from where it was proposed was moved


def keypoint_sigmas(n: int) -> np.ndarray:
    return COCO_PERSON_SIGMAS if n == 17 else np.full(n, OTHER_SIGMA)


def pixels_differing(a: np.ndarray, b: np.ndarray) -> int:
    """The pixels that must be painted or erased to turn mask ``a`` into mask ``b``."""
    return int(np.count_nonzero(a ^ b))


def _xyv(kp: Sequence[float] | None, n: int) -> np.ndarray:
    if kp is None:
        return np.zeros((n, 3))
    a = np.asarray(kp, dtype=float).reshape(-1, 3)
    if len(a) != n:
        raise ValueError(f"{len(a)} keypoints against {n}")
    return a


def keypoint_similarities(kp: Sequence[float] | None, truth: Sequence[float], area: float) -> np.ndarray:
    """COCO's per-keypoint similarity exp(-d^2 / (2 s^2 k^2)) of ``kp`` to each keypoint of ``truth``
    (s^2 the object's area, k twice the keypoint's sigma); 0 where ``kp`` leaves it unlabeled, NaN where
    ``truth`` does (it does not count)."""
    t = _xyv(truth, len(truth) // 3)
    p = _xyv(kp, len(t))
    k2 = (2 * keypoint_sigmas(len(t))) ** 2
    d2 = ((p[:, :2] - t[:, :2]) ** 2).sum(1)
    sim = np.exp(-d2 / (2 * max(float(area), 1.0) * k2))
    sim[p[:, 2] <= 0] = 0.0
    sim[t[:, 2] <= 0] = np.nan
    return sim


def oks(kp: Sequence[float] | None, truth: Sequence[float] | None, area: float) -> float | None:
    """COCO's object keypoint similarity of ``kp`` to ``truth`` over the keypoints ``truth`` labels; None
    when it labels none."""
    if not truth:
        return None
    sim = keypoint_similarities(kp, truth, area)
    labeled = ~np.isnan(sim)
    return float(sim[labeled].mean()) if labeled.any() else None


def keypoints_to_fix(kp: Sequence[float] | None, truth: Sequence[float] | None, area: float,
                     min_similarity: float) -> int:
    """The keypoints a labeler must place, move or clear to turn ``kp`` into ``truth``: each labeled in
    ``truth`` whose similarity is under ``min_similarity``, and each labeled in ``kp`` only."""
    if not truth:
        return 0 if not kp else int(np.count_nonzero(np.asarray(kp, dtype=float).reshape(-1, 3)[:, 2] > 0))
    sim = keypoint_similarities(kp, truth, area)
    p = _xyv(kp, len(sim))
    return int(np.count_nonzero(~np.isnan(sim) & (sim < min_similarity))
               + np.count_nonzero(np.isnan(sim) & (p[:, 2] > 0)))


def keypoints_moved(before: Sequence[float] | None, after: Sequence[float] | None) -> int:
    """The keypoints changed between two labels of one object: moved more than MOVED_PX, or labeled,
    cleared or made (in)visible."""
    if not before and not after:
        return 0
    n = len(before or after) // 3
    try:
        a, b = _xyv(before, n), _xyv(after, n)
    except ValueError:  # the category's keypoint list changed in between: every keypoint counts
        return n
    labeled_a, labeled_b = a[:, 2] > 0, b[:, 2] > 0
    far = np.hypot(*(a[:, :2] - b[:, :2]).T) > MOVED_PX
    return int(np.count_nonzero((labeled_a != labeled_b) | (labeled_a & labeled_b & ((a[:, 2] != b[:, 2]) | far))))
