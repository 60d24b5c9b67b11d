"""Training throughput: the project's loop (model.train.train_loop: AdamW, mixed precision and gradient
clipping on CUDA) against a plain torchvision float32 loop (SGD, no AMP), same model, same data, same run.

    .venv/bin/python bench/train.py --size tiny --iters 20
    python bench/train.py --size full --iters 30 --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.store import Settings, Store  # noqa: E402
from model import build as mb  # noqa: E402
from model.config import get  # noqa: E402
from model.data import TrainDataset, collate, labeled_samples, store_category_map  # noqa: E402
from model.demo import fill_demo  # noqa: E402
from model.predict import pick_device  # noqa: E402
from model.train import TrainOptions, train_loop  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Settings(store_dir=Path(tmp)))
        fill_demo(store, n_images=60, labeled_train=60, size=args.image_size)
        cmap = store_category_map(store)
        samples = labeled_samples(store, heldout=False)
        loader = torch.utils.data.DataLoader(TrainDataset(samples, cmap), batch_size=args.batch_size, shuffle=True,
                                             collate_fn=collate)
        config = get(args.size)

        def plain_loop(n):
            torch.manual_seed(0)
            model = mb.build(config, cmap).to(device).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
            it = 0
            while it < n:
                for images, targets in loader:
                    images = [i.to(device) for i in images]
                    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
                    loss = sum(model(images, targets).values())
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    it += 1
                    if it >= n:
                        break
            if device.type == "cuda":
                torch.cuda.synchronize()

        def ours(n):
            torch.manual_seed(0)
            model = mb.build(config, cmap)
            train_loop(model, loader, TrainOptions(batch_size=args.batch_size, device=str(device)), n, device,
                       None, lambda p: None)
            if device.type == "cuda":
                torch.cuda.synchronize()

        plain_loop(2), ours(2)  # warm-up
        t = time.perf_counter()
        plain_loop(args.iters)
        t_plain = time.perf_counter() - t
        t = time.perf_counter()
        ours(args.iters)
        t_ours = time.perf_counter() - t
    n_img = args.iters * args.batch_size
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"size {args.size}, {args.iters} iterations of batch {args.batch_size}, {args.image_size}px")
    print(f"plain torchvision fp32: {n_img / t_plain:.2f} img/s ({t_plain / args.iters:.2f} s/it)")
    print(f"maskloop train_loop:    {n_img / t_ours:.2f} img/s ({t_ours / args.iters:.2f} s/it)")
    print(f"ratio: {t_plain / t_ours:.2f}x")


if __name__ == "__main__":
    main()
