"""Box assist: server time per box (and per click, which runs the RPN and box head too) once an image's
features are cached, and the feature computation per
image, for the tiny (or full) configuration at a given image size. Random weights: the time does not depend
on what the heads learned.

    .venv/bin/python bench/assist.py [--size tiny] [--image-size 800] [--boxes 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.errors import UserError  # noqa: E402
from model import build as mb  # noqa: E402
from model.assist import Assistant  # noqa: E402
from model.categories import CategoryMap  # noqa: E402
from model.config import get  # noqa: E402
from model.predict import Predictor  # noqa: E402
from model.synthetic import CATEGORIES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--image-size", type=int, default=800)
    ap.add_argument("--boxes", type=int, default=30)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    cmap = CategoryMap.from_categories([SimpleNamespace(**{"keypoints": None, **c}) for c in CATEGORIES])
    config = get(args.size)
    net = mb.build(config, cmap)
    net.transform.min_size, net.transform.max_size = (args.image_size,), max(1333, args.image_size)
    helper = Assistant(Predictor(cmap, net=net, device=args.device))
    rng = np.random.default_rng(0)
    feats, per_box, per_point = [], [], []
    for k in range(args.images):
        pix = rng.integers(0, 255, (args.image_size, args.image_size, 3), dtype=np.uint8)
        t = time.perf_counter()
        helper.features(("bench", k), lambda: pix)
        feats.append(1000 * (time.perf_counter() - t))
        for _ in range(args.boxes):
            x0, y0 = rng.integers(0, args.image_size - 100, 2)
            w, h = rng.integers(40, 300, 2)
            t = time.perf_counter()
            helper.box(("bench", k), lambda: pix, (args.image_size, args.image_size), [x0, y0, x0 + w, y0 + h])
            per_box.append(1000 * (time.perf_counter() - t))
            x, y = (float(v) for v in rng.integers(10, args.image_size - 10, 2))
            t = time.perf_counter()
            try:  # random weights may see nothing at a point: that answer costs the same search
                helper.point(("bench", k), lambda: pix, (args.image_size, args.image_size), x, y)
            except UserError:
                pass
            per_point.append(1000 * (time.perf_counter() - t))
    print(f"machine: {platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, "
          f"device {args.device}, {args.size} at {args.image_size} px")
    print(f"features per image median {statistics.median(feats):.0f} ms (of {len(feats)})")
    print(f"assist per box median {statistics.median(per_box):.1f} ms, p90 "
          f"{sorted(per_box)[int(0.9 * len(per_box))]:.1f} ms (of {len(per_box)})")
    print(f"assist per click median {statistics.median(per_point):.1f} ms, p90 "
          f"{sorted(per_point)[int(0.9 * len(per_point))]:.1f} ms (of {len(per_point)})")


if __name__ == "__main__":
    main()
