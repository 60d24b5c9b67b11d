"""Store benchmark: COCO import then export of 10,000 images with 100,000 mask annotations.

    .venv/bin/python bench/store.py [--images 10000] [--per-image 10]

Synthetic data: small PNGs, masks as compressed RLE. Prints the seconds for each phase.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import coco_export, masks  # noqa: E402
from db.coco_import import import_coco  # noqa: E402
from db.store import Settings, Store  # noqa: E402


def make(root: Path, n_images: int, per_image: int, h: int = 48, w: int = 64) -> Path:
    rng = np.random.default_rng(0)
    images, anns = [], []
    yy, xx = np.mgrid[:h, :w]
    aid = 1
    for iid in range(1, n_images + 1):
        name = f"img_{iid:06d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name, compress_level=1)
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
        cx, cy = rng.uniform(0, w, per_image), rng.uniform(0, h, per_image)
        r = rng.uniform(3, 12, per_image)
        ms = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2 < r[:, None, None] ** 2
        for m, rle in zip(ms, masks.encode_batch(ms)):
            anns.append({"id": aid, "image_id": iid, "category_id": 1 + aid % 5, "segmentation": rle,
                         "area": int(m.sum()), "bbox": masks.mask_bbox_xywh(m), "iscrowd": 0})
            aid += 1
    cats = [{"id": i, "name": f"class{i}", "supercategory": "shape"} for i in range(1, 6)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--per-image", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        t = time.perf_counter()
        ann_path = make(root / "src", args.images, args.per_image)
        print(f"generated {args.images} images / {args.images * args.per_image} annotations "
              f"in {time.perf_counter() - t:.1f} s")
        store = Store(Settings(store_dir=root / "store"))
        t = time.perf_counter()
        r = import_coco(store, ann_path, root / "src")
        t_import = time.perf_counter() - t
        t = time.perf_counter()
        e = coco_export.export(store, root / "export.json")
        t_export = time.perf_counter() - t
        print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
        print(f"import-coco: {r['images']} images, {r['annotations']} annotations in {t_import:.2f} s")
        print(f"export-coco: {e['annotations']} annotations, {e['bytes'] / 1e6:.1f} MB in {t_export:.2f} s")


if __name__ == "__main__":
    main()
