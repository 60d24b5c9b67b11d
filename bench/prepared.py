"""What the model benchmarks share: a synthetic store of image files, and a checkpoint trained on that kind
of data for a fixed number of iterations, made once and cached under ``bench/.cache/`` (so masks and
keypoints come from a model that has learned something: an untrained one proposes near-empty masks, which
understates every per-detection cost).

    .venv/bin/python bench/prepared.py --size tiny --image-size 128 --iters 300   # make (or show) it
"""

from __future__ import annotations

import argparse
import sys
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

CACHE = Path(__file__).resolve().parent / ".cache"


def synthetic_store(root: Path, images: int, image_size: int, labeled: int = 0, seed: int = 0) -> Store:
    """A store of ``images`` synthetic PNG files (``labeled`` of the training split labeled and done)."""
    store = Store(Settings(store_dir=root))
    fill_demo(store, n_images=images, labeled_train=labeled, size=image_size, seed=seed)
    return store


def crowded_store(root: Path, images: int, image_size: int, max_objects: int = 4, fmt: str = "png",
                  seed: int = 0) -> tuple[Store, dict]:
    """A store of ``images`` unlabeled synthetic images of ``image_size`` px (the demo's objects, up to
    ``max_objects`` each, the later occluding the earlier), saved as ``fmt`` (png, or jpeg at quality 90 as
    a camera writes them), with the demo's categories (what the prepared checkpoints know); and their exact
    labels as a COCO dict (the store's image ids), to score proposals on."""
    import json

    import numpy as np
    from PIL import Image

    from db.coco_import import import_coco
    from model.synthetic import CATEGORIES, make_image

    rng = np.random.default_rng(seed)
    src = root / "src"
    src.mkdir(parents=True)
    ext = {"png": "png", "jpeg": "jpg"}[fmt]
    from db import annotations
    from db.instances import Instances

    listed, truth = [], []
    for k in range(images):
        pix, objs = make_image(rng, image_size, max_objects=max_objects)
        name = f"crowd_{k + 1:05d}.{ext}"
        Image.fromarray(pix).save(src / name, **({"quality": 90} if fmt == "jpeg" else {}))
        listed.append({"id": k + 1, "file_name": name, "width": image_size, "height": image_size})
        inst = Instances(image_size, image_size)
        for o in objs:
            inst.add(o["category_id"], [0, 0, 0, 0], mask=o["mask"], keypoints=o["keypoints"])
        truth.append(inst)
    store = Store(Settings(store_dir=root / "store"))
    cats = json.loads(json.dumps(CATEGORIES))
    import_coco(store, {"images": listed, "annotations": [], "categories": cats}, src, user="bench")
    by_name = {r.file_name: iid for iid, r in annotations.images(store, annotations.image_ids(store)).items()}
    anns, aid = [], 1
    for im, inst in zip(listed, truth):
        for a in inst.to_coco(by_name[im["file_name"]]):
            anns.append(a | {"id": aid})
            aid += 1
    gt = {"images": [im | {"id": by_name[im["file_name"]]} for im in listed], "annotations": anns,
          "categories": [{k: v for k, v in c.items() if k in ("id", "name", "keypoints")} for c in cats]}
    return store, gt


def checkpoint(size: str, image_size: int, iters: int, device: str = "auto") -> Path:
    """The cached checkpoint of a ``size`` model trained ``iters`` iterations (batch 4, the project's loop)
    on 96 labeled synthetic images of ``image_size`` px (seed 1: other images than the benchmarks run on)."""
    path = CACHE / f"{size}-{image_size}px-{iters}it.pt"
    if path.exists():
        return path
    import tempfile

    CACHE.mkdir(exist_ok=True)
    t = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp), 120, image_size, labeled=96, seed=1)
        cmap = store_category_map(store)
        config = get(size)
        torch.manual_seed(0)
        model = mb.build(config, cmap)
        loader = torch.utils.data.DataLoader(TrainDataset(labeled_samples(store, heldout=False), cmap, config=config),
                                             batch_size=4, shuffle=True, collate_fn=collate, drop_last=True)
        train_loop(model, loader, TrainOptions(device=device), iters, pick_device(device), None, lambda p: None)
        mb.save_checkpoint(path, model.cpu(), config, cmap)
    print(f"prepared {path.name}: {iters} iterations in {time.monotonic() - t:.0f} s", file=sys.stderr)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    print(checkpoint(a.size, a.image_size, a.iters, a.device))


if __name__ == "__main__":
    main()
