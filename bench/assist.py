"""Box assist: server time per box (and per click, which runs the RPN and box head too) once an image's
features are cached, and the feature computation per image, for the tiny (or full) configuration at a given
image size. Random weights: the time does not depend on what the heads learned. On a GPU each timed call
ends with a device synchronisation (the work is asynchronous: without it the clock stops before the GPU
is done), one image's features and prompts are run first, untimed (cuDNN's kernel choice, the allocator's
first blocks), and the peak GPU memory and the cached features' bytes are printed.

    .venv/bin/python bench/assist.py [--size tiny] [--image-size 800] [--boxes 30] [--device cpu]
    python bench/assist.py --size full --image-size 800 --device cuda   # GPU
"""

from __future__ import annotations

import argparse
import json
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
from model.assist import Assistant, feature_bytes  # noqa: E402
from model.categories import CategoryMap  # noqa: E402
from model.config import get  # noqa: E402
from model.predict import Predictor  # noqa: E402
from model.synthetic import CATEGORIES  # noqa: E402


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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
    n = args.image_size

    def timed(fn) -> float:
        t = time.perf_counter()
        try:  # random weights may see nothing at a point: that answer costs the same search
            fn()
        except UserError:
            pass
        _sync(args.device)
        return 1000 * (time.perf_counter() - t)

    def one_image(key, pix, feats: list, per_box: list, per_point: list) -> None:
        feats.append(timed(lambda: helper.features(key, lambda: pix)))
        for _ in range(args.boxes):
            x0, y0 = rng.integers(0, n - n // 8, 2)
            w, h = rng.integers(max(2, n // 20), max(3, 3 * n // 8), 2)  # (40 to 300 px at 800)
            per_box.append(timed(lambda: helper.box(key, lambda: pix, (n, n), [x0, y0, x0 + w, y0 + h])))
            x, y = (float(v) for v in rng.integers(10, n - 10, 2))
            per_point.append(timed(lambda: helper.point(key, lambda: pix, (n, n), x, y)))

    one_image(("warm-up", 0), rng.integers(0, 255, (n, n, 3), dtype=np.uint8), [], [], [])
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    feats, per_box, per_point = [], [], []
    for k in range(args.images):
        one_image(("bench", k), rng.integers(0, 255, (n, n, 3), dtype=np.uint8), feats, per_box, per_point)
    dev = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"machine: {platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, "
          f"device {dev}, {args.size} at {n} px")
    print(f"features per image median {statistics.median(feats):.1f} ms (of {len(feats)})")
    print(f"assist per box median {statistics.median(per_box):.1f} ms, p90 "
          f"{sorted(per_box)[int(0.9 * len(per_box))]:.1f} ms (of {len(per_box)})")
    print(f"assist per click median {statistics.median(per_point):.1f} ms, p90 "
          f"{sorted(per_point)[int(0.9 * len(per_point))]:.1f} ms (of {len(per_point)})")
    cached = feature_bytes(helper.features(("bench", args.images - 1), None)) / 2 ** 20  # (cached: a hit)
    print(f"cached features per image {cached:.1f} MB")
    result = {"features_ms": statistics.median(feats), "box_ms": statistics.median(per_box),
              "click_ms": statistics.median(per_point), "cached_mb_per_image": cached}
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        print(f"peak GPU memory (torch.cuda.max_memory_allocated) {result['peak_gpu_mb']:.0f} MB")
    print("RESULT assist " + json.dumps(result))


if __name__ == "__main__":
    main()
