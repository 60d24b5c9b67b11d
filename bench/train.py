"""Training speed, equal work: the same iterations of the same batches (same order, same flips), from the
same initial weights, with the same optimizer (AdamW, lr 1e-3, weight decay 1e-4, gradient clipping at 10),
the same precision policy (fp16 autocast with a gradient scaler on CUDA, float32 on the CPU) and the same
warm-up and cosine schedule, on the demo's synthetic data (shapes, and persons with 17 keypoints).

- baseline: a careful torchvision user's loop: torchvision's own heads (the keypoint head on every
  positive box), the loss of every head read with ``.item()`` for the log each iteration.
- maskloop: ``model.train.train_loop``: the keypoint head only on boxes of classes with keypoints, one
  host sync per iteration.

Each repeat runs both sides, in alternating order; the ratio is per pair (plain time / maskloop time).

    .venv/bin/python bench/train.py --size tiny --iters 30 --repeats 5
    python bench/train.py --size full --iters 20 --repeats 5 --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.models.detection.roi_heads import RoIHeads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prepared import synthetic_store  # noqa: E402
from model import build as mb  # noqa: E402
from model.config import get  # noqa: E402
from model.data import TrainDataset, collate, labeled_samples, store_category_map  # noqa: E402
from model.predict import pick_device  # noqa: E402
from model.train import TrainOptions, lr_factor, train_loop  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, batches, opts: TrainOptions, device: torch.device) -> None:
    """The careful user's loop over exactly ``batches``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=opts.weight_decay)
    n = len(batches)
    warm = max(1, min(opts.warmup_iters, n // 5))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, n, warm))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    model.train().to(device)
    log = []
    for images, targets in batches:
        images = [i.to(device) for i in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            losses = model(images, targets)
            loss = sum(v * (opts.keypoint_loss_weight if k == "loss_keypoint" else 1.0) for k, v in losses.items())
        if not math.isfinite(loss.item()):
            raise RuntimeError("diverged")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, opts.clip_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        log.append({k: v.item() for k, v in losses.items()})
    _sync(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = pick_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp), 80, a.image_size, labeled=80)
        cmap = store_category_map(store)
        config = get(a.size)
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(TrainDataset(labeled_samples(store, heldout=False), cmap),
                                             batch_size=a.batch_size, shuffle=True, collate_fn=collate,
                                             drop_last=True)
        batches = []
        while len(batches) < a.iters:  # the same batches for both sides, decoded once, outside the timing
            batches += list(loader)
        batches = batches[:a.iters]
        torch.manual_seed(1)
        initial = mb.build(config, cmap)
        opts = TrainOptions(batch_size=a.batch_size, device=str(device))

        def ours() -> float:
            model = copy.deepcopy(initial)
            t = time.perf_counter()
            train_loop(model, batches, opts, len(batches), device, None, lambda p: None)
            _sync(device)
            return time.perf_counter() - t

        def plain() -> float:
            model = copy.deepcopy(initial)
            model.roi_heads.__class__ = RoIHeads  # torchvision's own heads
            t = time.perf_counter()
            plain_loop(model, batches, opts, device)
            return time.perf_counter() - t

        plain(), ours()  # warm-up
        pairs = []
        for r in range(a.repeats):
            order = [("plain", plain), ("ours", ours)] if r % 2 == 0 else [("ours", ours), ("plain", plain)]
            got = {name: fn() for name, fn in order}
            pairs.append(got)
            print(f"repeat {r + 1}: plain {got['plain'] / a.iters:.3f} s/it, maskloop {got['ours'] / a.iters:.3f} s/it",
                  flush=True)
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\ndevice: {dev}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"size {a.size}, {a.iters} iterations of batch {a.batch_size}, {a.image_size}px")
    n_img = a.iters * a.batch_size
    print(f"plain torchvision loop: {n_img / statistics.median(p['plain'] for p in pairs):.2f} img/s")
    print(f"maskloop train_loop:    {n_img / statistics.median(p['ours'] for p in pairs):.2f} img/s")
    ratios = [p["plain"] / p["ours"] for p in pairs]
    print(f"speed-up per pair (plain/ours): {' '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
