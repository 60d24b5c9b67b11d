"""Store benchmark: COCO import then export of 10,000 images with 100,000 mask annotations; or, with
``--coco-mb``, the peak memory of importing a COCO file of that size.

    .venv/bin/python bench/store.py [--images 10000] [--per-image 10]
    .venv/bin/python bench/store.py --coco-mb 60

Synthetic data: small PNGs, masks as compressed RLE. Prints the seconds for each phase. ``--coco-mb`` writes a
polygon file (like COCO's own instances files) of about that many MB with one small PNG per 10 annotations,
runs ``app.py import-coco`` on it in a fresh process, and prints that process's peak RSS beside the peak RSS
of the same command on a file without images (the interpreter and its libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def make_polygons(root: Path, megabytes: float, per_image: int = 10, h: int = 48, w: int = 64) -> Path:
    """A COCO file of about ``megabytes`` MB whose annotations are 32-vertex polygons with two decimals (COCO's
    own files look like this), ``per_image`` to an image; each image a small PNG of its own bytes."""
    rng = np.random.default_rng(1)
    images, anns, size, iid, aid = [], [], 0, 0, 0
    angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    while size < megabytes * 1e6:
        iid += 1
        name = f"img_{iid:06d}.png"
        pix = np.zeros((h, w, 3), np.uint8)
        pix[0, :3] = (iid & 255, (iid >> 8) & 255, (iid >> 16) & 255)  # distinct bytes: one image each
        Image.fromarray(pix).save(root / name, compress_level=1)
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
        for _ in range(per_image):
            aid += 1
            cx, cy, r = rng.uniform(12, w - 12), rng.uniform(12, h - 12), rng.uniform(4, 11)
            poly = np.round(np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel(), 2).tolist()
            xs, ys = poly[0::2], poly[1::2]
            a = {"id": aid, "image_id": iid, "category_id": 1 + aid % 5, "segmentation": [poly],
                 "area": round(float(np.pi * r * r), 2), "iscrowd": 0,
                 "bbox": [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]}
            anns.append(a)
            size += len(json.dumps(a))
    cats = [{"id": i, "name": f"class{i}", "supercategory": "shape"} for i in range(1, 6)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


# Runs app.py as a user runs it and, when it exits, writes its own peak RSS (VmHWM: the process's memory since
# it started, not the RSS of the parent it was forked from, which the rusage of a child includes on Linux).
_MEASURED = """
import atexit, runpy, sys
peak_file, sys.argv = sys.argv[1], sys.argv[2:]
def peak():
    with open(peak_file, "w") as out:
        out.write(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
atexit.register(peak)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def import_rss(coco: Path, images: Path, store: Path) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of ``app.py import-coco`` on ``coco`` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _MEASURED, str(peak_file), str(ROOT / "app.py"), "import-coco",
                            str(coco), "--images", str(images), "--store", str(store)], capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"import-coco failed: {r.stderr[-2000:]}")
        return int(peak_file.read_text()) * 1024 / 1e6, seconds  # (VmHWM is in kB)


def coco_memory(megabytes: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        t = time.perf_counter()
        path = make_polygons(root / "src", megabytes)
        data = json.loads(path.read_text())
        print(f"generated {path.stat().st_size / 1e6:.1f} MB: {len(data['images'])} images, "
              f"{len(data['annotations'])} polygon annotations in {time.perf_counter() - t:.1f} s")
        del data
        empty = root / "empty.json"
        empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        base, _ = import_rss(empty, root / "src", root / "base-store")
        peak, seconds = import_rss(path, root / "src", root / "store")
        print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
              f"{os.cpu_count()} cores")
        print(f"app.py import-coco on an empty file: peak RSS {base:.0f} MB")
        print(f"app.py import-coco on {path.stat().st_size / 1e6:.1f} MB: peak RSS {peak:.0f} MB in {seconds:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--per-image", type=int, default=10)
    ap.add_argument("--coco-mb", type=float, default=None, help="measure the peak RSS of importing a COCO file "
                                                                "of this many MB instead")
    args = ap.parse_args()
    if args.coco_mb is not None:
        coco_memory(args.coco_mb)
        return
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
