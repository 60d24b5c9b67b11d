"""A whole skeleton laid out in a box (the keypoint tool's drag): each keypoint's place as a fraction of the
box, taken from the category's labeled instances (this image's and the store's latest accepted ones: the
mean of each keypoint's place in its instance's box), else a default layout (a standing person, seen from
the front, for COCO's person keypoints; a spread for other names). The points are then dragged into place."""

from __future__ import annotations

import math
from typing import Any, Sequence

from db import annotations

# COCO person keypoints: a standing person seen from the front (the person's left is on the image's right)
PERSON = {
    "nose": (0.50, 0.07), "left_eye": (0.54, 0.05), "right_eye": (0.46, 0.05), "left_ear": (0.58, 0.07),
    "right_ear": (0.42, 0.07), "left_shoulder": (0.68, 0.20), "right_shoulder": (0.32, 0.20),
    "left_elbow": (0.76, 0.36), "right_elbow": (0.24, 0.36), "left_wrist": (0.80, 0.50),
    "right_wrist": (0.20, 0.50), "left_hip": (0.60, 0.52), "right_hip": (0.40, 0.52), "left_knee": (0.60, 0.74),
    "right_knee": (0.40, 0.74), "left_ankle": (0.60, 0.95), "right_ankle": (0.40, 0.95),
}
MIN_EXAMPLES = 1  # labeled instances of the category needed before their layout is used


def default(names: Sequence[str]) -> list[tuple[float, float]]:
    """The person layout for the names it knows; the others spread on a ring inside the box."""
    rest = [n for n in names if n not in PERSON]
    out = []
    for n in names:
        if n in PERSON:
            out.append(PERSON[n])
            continue
        a = 2 * math.pi * rest.index(n) / len(rest) - math.pi / 2
        out.append((0.5 + 0.4 * math.cos(a), 0.5 + 0.4 * math.sin(a)))
    return out


def learned(examples: Sequence[tuple[Sequence[float], Sequence[float]]], k: int) -> list[tuple[float, float] | None]:
    """Each keypoint's mean place in its instance's box (None where no example placed it)."""
    sums = [[0.0, 0.0, 0] for _ in range(k)]
    for (bx, by, bw, bh), kps in examples:
        if len(kps) != 3 * k or bw < 1 or bh < 1:
            continue
        for j in range(k):
            x, y, v = kps[3 * j:3 * j + 3]
            if v > 0:
                sums[j][0] += (x - bx) / bw
                sums[j][1] += (y - by) / bh
                sums[j][2] += 1
    return [(sx / n, sy / n) if n else None for sx, sy, n in sums]


def template(ls: Any, category_id: int) -> tuple[list[tuple[float, float]], str]:
    """The layout for a category's keypoints (fractions of a box) and where it came from."""
    names = ls.categories[category_id].keypoints
    here = [(ls.instances.bboxes[i], ls.instances.keypoints[i]) for i in range(len(ls.instances))
            if ls.instances.category_ids[i] == category_id and not ls.instances.deleted[i]
            and ls.instances.states[i] == "accepted" and ls.instances.keypoints[i]
            and any(v > 0 for v in ls.instances.keypoints[i][2::3])]
    examples = here + annotations.keypoint_examples(ls.store, category_id)
    fallback = default(names)
    got = learned(examples, len(names)) if len(examples) >= MIN_EXAMPLES else [None] * len(names)
    if not any(got):
        return fallback, "a standing person" if any(n in PERSON for n in names) else "spread in the box"
    return [g if g is not None else f for g, f in zip(got, fallback)], \
        f"laid out as {len(examples)} labeled {ls.categories[category_id].name}(s)"


def placed(layout: Sequence[tuple[float, float]], box: Sequence[float]) -> list[float]:
    """The layout put in a box (two corners): [x, y, 2] * K."""
    x0, x1 = sorted((box[0], box[2]))
    y0, y1 = sorted((box[1], box[3]))
    out: list[float] = []
    for fx, fy in layout:
        out += [x0 + fx * (x1 - x0), y0 + fy * (y1 - y0), 2]
    return out
