"""Round 0 on a CPU: what a user without a GPU waits for with ``--weights coco``, the full model at 800 px.

Offline, with stand-in COCO weights (model/standin.py: torchvision's architectures, random weights, written
into a temporary TORCH_HOME under the real files' names) that the product code loads unchanged. Each measure
runs in a fresh process of its own, so its peak RSS (getrusage ru_maxrss: the process's high-water mark,
torch and the networks included) is its own:

- propose: ``model.predict.ensure_round0`` and ``Predictor.for_version`` (load time), then
  ``model.predict.propose`` (as ``app.py propose`` runs it: torchvision's Mask R-CNN v2 and Keypoint R-CNN,
  persons merged, rows written) on one photo at a time, ms per image.
- assist: the full model as a fine-tune starts it (``model.build.build`` + ``init_from_coco``), through
  ``model.assist.Assistant``: the backbone features per image (``features``, computed once per image), then
  ms per box prompt on them (``box``, class from the box head; every other box asks for a person, which runs
  the keypoint head too).

Random weights score every detection high, so round 0 fills all 100 detection slots and runs the mask and
keypoint heads on all of them: a worst case for those heads; a real photo with few objects costs less. The
backbone, RPN and box head cost the same whatever the weights.

    .venv/bin/python bench/round0.py                          # 5 photos, 20 boxes per photo
    .venv/bin/python bench/round0.py --images 1 --boxes 2     # a quick check that it runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db.coco_import import import_coco  # noqa: E402
from db.ingest import ingest  # noqa: E402
from db.store import Settings, Store  # noqa: E402
from model import build as mb  # noqa: E402
from model import standin  # noqa: E402
from model.assist import Assistant  # noqa: E402
from model.config import get  # noqa: E402
from model.data import store_category_map  # noqa: E402
from model.options import ModelOptions  # noqa: E402
from model.predict import Predictor, ensure_round0, propose  # noqa: E402
from model.synthetic import PERSON_KEYPOINTS, PERSON_SKELETON, write_photo  # noqa: E402

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": PERSON_KEYPOINTS,
               "skeleton": PERSON_SKELETON},
              {"id": 18, "name": "dog", "supercategory": "animal"},
              {"id": 500, "name": "widget", "supercategory": "thing"}]  # COCO has no widget: it starts new


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _store(root: Path, images: int, width: int, height: int) -> tuple[Store, list[int]]:
    """A store with person (COCO's 17 keypoints), dog and widget, and ``images`` photo-like JPEGs."""
    store = Store(Settings(store_dir=root / "store"))
    import_coco(store, {"images": [], "annotations": [], "categories": CATEGORIES}, root)
    paths = [write_photo(root / f"photo{k}.jpg", width, height, seed=k) for k in range(images)]
    return store, [i for i, _ in ingest(store, paths).added]


def measure_propose(root: Path, a) -> dict:
    store, ids = _store(root, a.images + 1, a.width, a.height)
    options = ModelOptions(device=a.device, weights="coco")
    t = time.perf_counter()
    ensure_round0(store, options)  # loads both networks once to know they load, then registers version 1
    pred = Predictor.for_version(store, options, batch_size=1)
    load = time.perf_counter() - t
    propose(store, ids[:1], pred, min_score=a.min_score)  # warm-up (first-call allocations)
    ms, found = [], []
    for image_id in ids[1:]:
        t = time.perf_counter()
        r = propose(store, [image_id], pred, min_score=a.min_score)
        ms.append(1000 * (time.perf_counter() - t))
        found.append(r["proposals"])
    store.close()
    return {"load_s": load, "ms": ms, "proposals": found, "peak_mib": peak_mib()}


def measure_assist(root: Path, a) -> dict:
    store, _ = _store(root, 0, a.width, a.height)
    cmap = store_category_map(store)
    store.close()
    config = get("full")
    t = time.perf_counter()
    net = mb.build(config, cmap)
    mb.init_from_coco(net, mb.load_coco_nets("coco"), cmap)  # the start of the first full-size fine-tune
    mb.set_eval_size(net, config)
    helper = Assistant(Predictor(cmap, net=net, device=a.device))
    load = time.perf_counter() - t
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (a.height, a.width, 3), dtype=np.uint8) for _ in range(a.images + 1)]
    person = cmap.ids[cmap.names.index("person")]
    feats, boxes = [], []
    for k, pix in enumerate(photos):
        t = time.perf_counter()
        helper.features(k, lambda: pix)
        if k == 0:  # warm-up
            helper.box(k, lambda: pix, (a.height, a.width), [10, 10, 200, 300])
            continue
        feats.append(1000 * (time.perf_counter() - t))
        for j in range(a.boxes):
            x0, y0 = rng.integers(0, a.width // 2), rng.integers(0, a.height // 2)
            w, h = rng.integers(40, a.width // 2), rng.integers(40, a.height // 2)
            t = time.perf_counter()
            helper.box(k, lambda: pix, (a.height, a.width), [x0, y0, x0 + w, y0 + h],
                       category_id=person if j % 2 else None)
            boxes.append(1000 * (time.perf_counter() - t))
    return {"load_s": load, "features_ms": feats, "box_ms": boxes, "peak_mib": peak_mib()}


MEASURES = {"propose": measure_propose, "assist": measure_assist}


def _stats(ms: list[float]) -> str:
    if not ms:
        return "| | |"
    p90 = sorted(ms)[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"| {statistics.median(ms):,.0f} | {p90:,.0f} | {len(ms)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5, help="photos measured (after one warm-up photo)")
    ap.add_argument("--boxes", type=int, default=20, help="assist box prompts per photo")
    ap.add_argument("--width", type=int, default=1067)
    ap.add_argument("--height", type=int, default=800, help="the full model resizes the shorter side to 800")
    ap.add_argument("--min-score", type=float, default=0.3, help="as app.py propose")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", choices=sorted(MEASURES))
    ap.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)  # one, in this process
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.measure:  # a child: TORCH_HOME is set by the parent
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(MEASURES[a.measure](Path(tmp), a)), flush=True)
        return
    command = " ".join(shlex.quote(x) for x in [".venv/bin/python", "bench/round0.py", *sys.argv[1:]])
    results = {}
    with tempfile.TemporaryDirectory() as home:
        standin.write(home)
        env = dict(os.environ, TORCH_HOME=home)
        for name in a.only or list(MEASURES):
            args = [sys.executable, __file__, "--measure", name, "--images", str(a.images), "--boxes", str(a.boxes),
                    "--width", str(a.width), "--height", str(a.height), "--min-score", str(a.min_score),
                    "--device", a.device] + (["--threads", str(a.threads)] if a.threads else [])
            out = subprocess.run(args, capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"{name}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                continue
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"command: {command}")
    print(f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC · torch {torch.__version__} · "
          f"{a.device}, {torch.get_num_threads()} threads of {os.cpu_count()} cores · {platform.machine()} · "
          f"full model, {a.width}x{a.height} photos · stand-in (random) COCO weights")
    print("\n| measure | ms median | p90 | n | load s | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|")
    if "propose" in results:
        r = results["propose"]
        print(f"| round-0 propose, per image ({statistics.median(r['proposals']) if r['proposals'] else 0:.0f} "
              f"proposals each) {_stats(r['ms'])} | {r['load_s']:.1f} | {r['peak_mib']:,.0f} |")
    if "assist" in results:
        r = results["assist"]
        print(f"| assist features, per image {_stats(r['features_ms'])} | {r['load_s']:.1f} | {r['peak_mib']:,.0f} |")
        print(f"| assist box, per box (every other a person) {_stats(r['box_ms'])} | | (same process) |")


if __name__ == "__main__":
    main()
