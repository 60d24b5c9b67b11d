"""Training speed, equal work: the same iterations of the same batches (same order, same flips, images as
uint8 made float on the device), from the same initial weights, with the same optimizer (AdamW, lr 1e-3,
weight decay 1e-4, gradient clipping at 10; the same implementation on both sides: the fused kernel where
torch has it, as a careful user passes ``fused=True`` on CUDA), the same precision policy (fp16 autocast with
a gradient scaler on CUDA, float32 on the CPU), the same warm-up and cosine schedule and the same random
state (reseeded before each run: torchvision's transform draws each batch's training size from it), on the
demo's synthetic data (shapes, and persons with 17 keypoints). On CUDA the peak GPU memory of each side is
printed too.

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
import json
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
from model.train import TrainOptions, adamw, lr_factor, train_loop  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, batches, opts: TrainOptions, device: torch.device) -> None:
    """The careful user's loop over exactly ``batches``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr=1e-3, weight_decay=opts.weight_decay)  # (fused=True where torch has it)
    n = len(batches)
    warm = max(1, min(opts.warmup_iters, n // 5))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, n, warm))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    model.train().to(device)
    log = []
    for images, targets in batches:
        images = [i.to(device).float().div_(255) for i in images]
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
    ap.add_argument("--images", type=int, default=80, help="labeled synthetic images the batches come from")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = pick_device(a.device)
    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp), a.images, a.image_size, labeled=a.images)
        cmap = store_category_map(store)
        config = get(a.size)
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(TrainDataset(labeled_samples(store, heldout=False), cmap, config=config),
                                             batch_size=a.batch_size, shuffle=True, collate_fn=collate,
                                             drop_last=True)
        batches = []
        while len(batches) < a.iters:  # the same batches for both sides, decoded once, outside the timing
            batches += list(loader)
        batches = batches[:a.iters]
        torch.manual_seed(1)
        initial = mb.build(config, cmap)
        opts = TrainOptions(batch_size=a.batch_size, device=str(device))
        peaks: dict[str, float] = {}

        def run(name: str, loop) -> float:
            model = copy.deepcopy(initial)
            if name == "plain":
                model.roi_heads.__class__ = RoIHeads  # torchvision's own heads
            torch.manual_seed(2)  # the same training sizes (and any other draw) on both sides
            if cuda:
                _sync(device)
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            loop(model)
            _sync(device)
            took = time.perf_counter() - t
            if cuda:
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2 ** 20)
            return took

        def ours() -> float:
            return run("ours", lambda m: train_loop(m, batches, opts, len(batches), device, None, lambda p: None))

        def plain() -> float:
            return run("plain", lambda m: plain_loop(m, batches, opts, device))

        plain(), ours()  # warm-up
        pairs = []
        for r in range(a.repeats):
            order = [("plain", plain), ("ours", ours)] if r % 2 == 0 else [("ours", ours), ("plain", plain)]
            got = {name: fn() for name, fn in order}
            pairs.append(got)
            print(f"repeat {r + 1}: plain {got['plain'] / a.iters:.3f} s/it, maskloop {got['ours'] / a.iters:.3f} s/it",
                  flush=True)
    dev = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\ndevice: {dev}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"size {a.size}, {a.iters} iterations of batch {a.batch_size}, {a.image_size}px")
    n_img = a.iters * a.batch_size
    plain_ips = n_img / statistics.median(p['plain'] for p in pairs)
    ours_ips = n_img / statistics.median(p['ours'] for p in pairs)
    print(f"plain torchvision loop: {plain_ips:.2f} img/s")
    print(f"maskloop train_loop:    {ours_ips:.2f} img/s")
    ratios = [p["plain"] / p["ours"] for p in pairs]
    print(f"speed-up per pair (plain/ours): {' '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}x")
    result = {"plain_it_s": plain_ips / a.batch_size, "ours_it_s": ours_ips / a.batch_size,
              "speedup": statistics.median(ratios), "batch_size": a.batch_size}
    if cuda:
        print(f"peak GPU memory (torch.cuda.max_memory_allocated): plain {peaks['plain']:.0f} MB, "
              f"maskloop {peaks['ours']:.0f} MB")
        result |= {"plain_peak_gpu_mb": peaks["plain"], "ours_peak_gpu_mb": peaks["ours"]}
    print("RESULT train " + json.dumps(result))


if __name__ == "__main__":
    main()
