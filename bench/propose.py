"""Proposal throughput: the project's path (Predictor: inference mode, mixed precision on CUDA, batched,
masks thresholded on the device and RLE-encoded in one C call, rows written to the store) against plain
torchvision eager float32 (no_grad, one image at a time, masks encoded one by one), same images, same run.

    .venv/bin/python bench/propose.py --size tiny --images 32 --image-size 128
    python bench/propose.py --size full --images 64 --image-size 800 --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import masks as mask_codec  # noqa: E402
from db.store import Settings, Store  # noqa: E402
from model import build as mb  # noqa: E402
from model.config import get  # noqa: E402
from model.demo import fill_demo  # noqa: E402
from model.predict import Predictor, pick_device, propose  # noqa: E402
from model.data import store_category_map  # noqa: E402
from db.media import load_rgb  # noqa: E402
from db import annotations  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Settings(store_dir=Path(tmp)))
        fill_demo(store, n_images=args.images, labeled_train=0, size=args.image_size)
        cmap = store_category_map(store)
        config = get(args.size)
        net = mb.build(config, cmap)
        net.roi_heads.score_thresh = 0.0  # a full set of detections per image: the worst case for decoding
        mb.set_eval_size(net, config)
        rows = list(annotations.images(store, annotations.image_ids(store)).values())
        ids_all = [r.id for r in rows]
        pixels = [np.asarray(load_rgb(store.media_file(r.media_path))) for r in rows]

        # plain torchvision eager float32, one image at a time
        plain = net.to(device).eval()
        _ = plain([torch.rand(3, args.image_size, args.image_size, device=device)])  # warm-up
        _sync(device)
        t = time.perf_counter()
        n_masks = 0
        with torch.no_grad():
            for pix in pixels:
                x = torch.from_numpy(pix.copy()).permute(2, 0, 1).float().div(255).to(device)
                out = plain([x])[0]
                for m in out["masks"]:
                    mask_codec.encode((m[0] > 0.5).cpu().numpy())
                    n_masks += 1
        _sync(device)
        t_plain = time.perf_counter() - t

        class V:  # a stand-in version row for the benchmark's writes
            id = None

        pred = Predictor(cmap, net=net, device=str(device), batch_size=args.batch_size, version=V())
        pred.predict(pixels[: args.batch_size])  # warm-up
        _sync(device)
        t = time.perf_counter()
        r = propose(store, ids_all, pred, min_score=0.0)
        _sync(device)
        t_ours = time.perf_counter() - t
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"size {args.size}, {len(pixels)} images of {args.image_size}px, batch {args.batch_size}")
    print(f"plain torchvision fp32 eager: {len(pixels) / t_plain:.2f} img/s ({1000 * t_plain / len(pixels):.1f} ms/img, "
          f"{n_masks} masks encoded)")
    print(f"maskloop propose (to DB rows): {len(pixels) / t_ours:.2f} img/s ({1000 * t_ours / len(pixels):.1f} ms/img, "
          f"{r['proposals']} rows)")
    print(f"ratio: {t_plain / t_ours:.2f}x")


if __name__ == "__main__":
    main()
