"""Learning within a time budget: held-out AP after the same minutes of training on the CPU, for the
project's fine-tune (``app.py train --size tiny --max-minutes M``, the same code path) and for a plain
torchvision loop on the same images and the same network (torchvision's own heads; SGD, lr 0.02, momentum
0.9, weight decay 1e-4, batch 4, random flips, no schedule, stopped by the same clock). Both are evaluated
by the project's evaluator on the same held-out images (one in five by id, never trained on).

Data: ``model.synthetic.make_shapes_coco``, 128-px images of four shape classes (not the demo's
generator): 200 images, 160 to train on, 40 held out.

    .venv/bin/python bench/learn.py --minutes 4
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.models.detection.roi_heads import RoIHeads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.coco_import import import_coco  # noqa: E402
from db.store import Settings, Store  # noqa: E402
from model import build as mb  # noqa: E402
from model import evaluate as ev  # noqa: E402
from model.config import get  # noqa: E402
from model.data import TrainDataset, collate, labeled_samples, store_category_map  # noqa: E402
from model.predict import Predictor  # noqa: E402
from model.synthetic import make_coco, make_shapes_coco  # noqa: E402
from model.train import TrainOptions, fine_tune  # noqa: E402


def shapes_store(root: Path, n_images: int, size: int, seed: int, data: str = "shapes") -> Store:
    store = Store(Settings(store_dir=root / "store"))
    make = make_shapes_coco if data == "shapes" else make_coco
    files, coco = make(n_images, size=size, seed=seed)
    src = root / "src"
    src.mkdir()
    for name, pix in files:
        Image.fromarray(pix).save(src / name)
    (src / "labels.json").write_text(json.dumps(coco))
    import_coco(store, coco, src, user="bench")
    return store


def plain_loop(store: Store, minutes: float, seed: int) -> tuple[dict, int]:
    """The plain torchvision loop; returns (held-out metrics, iterations)."""
    torch.manual_seed(seed)
    cmap = store_category_map(store)
    config = get("tiny")
    net = mb.build(config, cmap)
    net.roi_heads.__class__ = RoIHeads  # torchvision's own heads
    samples = labeled_samples(store, heldout=False)
    loader = torch.utils.data.DataLoader(TrainDataset(samples, cmap), batch_size=4, shuffle=True,
                                         collate_fn=collate, drop_last=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    net.train()
    it, end = 0, time.monotonic() + 60 * minutes
    while time.monotonic() < end:
        for images, targets in loader:
            loss = sum(net([i.float().div(255) for i in images], list(targets)).values())  # (uint8 images)
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
            if time.monotonic() >= end:
                break
    mb.set_eval_size(net, config)
    return ev.evaluate(Predictor(cmap, net=net, device="cpu"), labeled_samples(store, heldout=True)), it


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["maskloop", "plain"], default=None)
    ap.add_argument("--epochs", type=int, default=None,
                    help="maskloop side only: train this many epochs instead of the minutes (to compare settings "
                         "at equal iterations on a busy machine; not a time-budget figure)")
    ap.add_argument("--data", choices=["shapes", "demo"], default="shapes",
                    help="shapes: model.synthetic.make_shapes_coco (default); demo: the demo's generator")
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = shapes_store(Path(tmp), a.images, a.image_size, a.seed, a.data)
        n_train, n_held = len(labeled_samples(store, heldout=False)), len(labeled_samples(store, heldout=True))
        print(f"{n_train} training images, {n_held} held out, {a.image_size} px; {a.minutes} minutes each", flush=True)
        if a.only in (None, "maskloop"):
            t = time.monotonic()
            r = fine_tune(store, TrainOptions(size="tiny", epochs=a.epochs,
                                              max_minutes=None if a.epochs else a.minutes, seed=a.seed, device="cpu"))
            results["maskloop"] = (r.metrics, r.iterations, time.monotonic() - t)
            print(f"maskloop fine_tune: {r.iterations} iterations, {time.monotonic() - t:.0f} s with evaluation: "
                  f"{_fmt(r.metrics)}", flush=True)
        if a.only in (None, "plain"):
            t = time.monotonic()
            metrics, its = plain_loop(store, a.minutes, a.seed)
            results["plain"] = (metrics, its, time.monotonic() - t)
            print(f"plain torchvision SGD: {its} iterations, {time.monotonic() - t:.0f} s with evaluation: "
                  f"{_fmt(metrics)}", flush=True)
    print(f"CPU ({torch.get_num_threads()} threads); torch {torch.__version__}; python {platform.python_version()}")


def _fmt(m: dict) -> str:
    return ", ".join(f"{k} AP {m[k]:.3f}" for k in ("bbox", "segm", "keypoints") if m.get(k) is not None)


if __name__ == "__main__":
    main()
