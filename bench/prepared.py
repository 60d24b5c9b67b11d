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
    ``max_objects`` each, the later occluding the earlier: ``model.synthetic.make_coco``), saved as ``fmt``
    (png, or jpeg at quality 90 as a camera writes them), with the demo's categories (what the prepared
    checkpoints know); and their exact labels as a COCO dict of the store's image ids, to score proposals on."""
    from PIL import Image

    from db import annotations
    from db.coco_import import import_coco
    from model.synthetic import make_coco

    files, truth = make_coco(images, size=image_size, seed=seed, max_objects=max_objects, prefix="crowd")
    src = root / "src"
    src.mkdir(parents=True)
    renamed = {}
    for name, pix in files:
        renamed[name] = name if fmt == "png" else name[:-len(".png")] + ".jpg"
        Image.fromarray(pix).save(src / renamed[name], **({"quality": 90} if fmt == "jpeg" else {}))
    listed = [im | {"file_name": renamed[im["file_name"]]} for im in truth["images"]]
    store = Store(Settings(store_dir=root / "store"))
    import_coco(store, {"images": listed, "annotations": [], "categories": truth["categories"]}, src, user="bench")
    ids = {r.file_name: iid for iid, r in annotations.images(store, annotations.image_ids(store)).items()}
    old_to_new = {im["id"]: ids[im["file_name"]] for im in listed}
    gt = {"images": [im | {"id": old_to_new[im["id"]]} for im in listed],
          "annotations": [a | {"image_id": old_to_new[a["image_id"]]} for a in truth["annotations"]],
          "categories": [{k: v for k, v in c.items() if k in ("id", "name", "keypoints")} for c in truth["categories"]]}
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
