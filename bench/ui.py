"""Server-side time of the label view's common actions on a 1920x1080 image with 30 instances:
open (load labels + the canvas data), accept, mask edit (a brush stroke), save; and the picture sent to the
browser once per image. Each action includes building the canvas data it answers with (annotator.canvas).
The browser side is measured by bench/canvas.py.

    .venv/bin/python bench/ui.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotator import canvas  # noqa: E402
from annotator.labeling import LabelSession  # noqa: E402
from annotator.page import Page  # noqa: E402
from db import masks  # noqa: E402
from db.coco_import import import_coco  # noqa: E402
from db.store import Settings, Store  # noqa: E402

W, H, N = 1920, 1080, 30


def make_store(root: Path) -> Store:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "big.jpg", quality=90)
    yy, xx = np.mgrid[:H, :W]
    anns = []
    for k in range(N):
        cx, cy, rx, ry = rng.uniform(100, W - 100), rng.uniform(100, H - 100), rng.uniform(20, 120), rng.uniform(20, 120)
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        ann = {"id": k + 1, "image_id": 1, "category_id": 1 + k % 3, "segmentation": masks.encode(m),
               "area": int(m.sum()), "bbox": masks.mask_bbox_xywh(m), "iscrowd": 0,
               "score": float(rng.uniform(0.3, 0.99))}
        if k % 3 == 0:  # category 1 has keypoints: a head and a tail on the ellipse's axis
            ann["keypoints"] = [round(cx - rx / 2, 1), round(cy, 1), 2, round(cx + rx / 2, 1), round(cy, 1), 2]
            ann["num_keypoints"] = 2
        anns.append(ann)
    cats = [{"id": i, "name": f"c{i}", "supercategory": ""} for i in (1, 2, 3)]
    cats[0].update(keypoints=["head", "tail"], skeleton=[[1, 2]])
    coco = {"images": [{"id": 1, "file_name": "big.jpg", "width": W, "height": H}], "annotations": anns,
            "categories": cats}
    (root / "a.json").write_text(json.dumps(coco))
    store = Store(Settings(store_dir=root / "store"))
    import_coco(store, root / "a.json", root, as_proposals=True)
    return store


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    res: dict[str, list[float]] = {"open": [], "accept": [], "mask edit": [], "save": [], "picture": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp))
        for _ in range(args.repeats):
            def open_():
                page = Page("bench", session=LabelSession(store, 1))
                canvas.payload(page)
                return page

            ms, page = timed(open_)
            ls = page.session
            res["open"].append(ms)
            ms, _ = timed(lambda: (canvas.apply(page, {"op": "accept", "index": 3}), canvas.payload(page)))
            res["accept"].append(ms)
            x, y, w, h = ls.instances[5].bbox
            stroke = {"op": "stroke", "index": 5, "radius": 12,
                      "points": [[x + w / 4, y + h / 2], [x + w / 2, y + h / 2], [x + w, y + h / 2]]}
            ms, _ = timed(lambda: (canvas.apply(page, stroke), canvas.payload(page)))
            res["mask edit"].append(ms)
            ms, _ = timed(lambda: ls.save("bench"))
            res["save"].append(ms)
            ms, _ = timed(lambda: canvas.picture(store, 1))
            res["picture"].append(ms)
    print(f"machine: {platform.machine()}, python {platform.python_version()}; {W}x{H} image, {N} instances, "
          f"median of {args.repeats}")
    for k, v in res.items():
        print(f"{k:<12} median {statistics.median(v):7.1f} ms   max {max(v):7.1f} ms")


if __name__ == "__main__":
    main()
