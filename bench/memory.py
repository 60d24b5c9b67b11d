"""Memory and time at photo scale (issue 19). Each measure runs in a fresh process of its own (so one
measure's allocations never count in another's), reads the process's resident memory from /proc, and prints
one JSON line; the parent prints the table that docs/benchmarks.md quotes.

    .venv/bin/python bench/memory.py                 # every measure (about 4 minutes on 2 idle cores)
    .venv/bin/python bench/memory.py --only page edits

Measures (the store is built once per measure, before the first reading):
- page: server RSS per open Label page (annotator.label_tab.LabelTab.open, as the browser's Open does: labels, canvas
  data, display cache) of a 6000x4000 JPEG with 20 proposals; 10 pages, each its own (the page budget would
  end none of them).
- edits: RSS per accept or reject (40 of them, undo steps kept) and per brush stroke (100 strokes of radius 40
  over 60 points on one proposal, each path painted then erased), on that photo.
- label_image: /label_image (annotator.routes.label_image) with 500 messages (accepts, rejects and strokes) on the
  photo: peak RSS growth during the call, and what is still held after it.
- many: an image of 640x480 with 20,000 annotations: open in the Label tab (session + canvas data) and its
  gallery page (annotator.store_view.gallery): seconds and peak RSS growth each.
- stroke: the server time of the largest stroke one message may draw on the photo (radius 1024, 30 dabs), and of
  refusing one over the limit (20,000 points at radius 1024).
- queue: Bob opens a 24 MP photo while Ann has 12 opens queued, from one page (Next held down) and from 12 pages
  of hers, against Bob's open on an idle server (the app, Ann's clients and Bob's in three processes, logins
  ann and bob, all through gradio_client; on 2 cores Ann's client process takes its share of the CPU too).
- train: peak RSS of one pass of fine-tuning's data (model.data.TrainDataset through model.train.train_loader:
  each image decoded, its targets made: full-frame masks for the loss) over 60 and over 600 labeled 1920x1080
  images with 15 instances each; the samples are checked to hold no decoded mask afterwards.
- propose / propose_whole: proposals on the 6000x4000 photo with the tiny model, every detection slot kept
  (50 masks at photo size): peak RSS growth and seconds of one call; the photo decoded at the network's scale
  (PIL draft), or whole (as before issue 22).
- photo_train: peak RSS of a short training on 24 MP photos (4 synthetic 6000x4000 JPEGs, 5 instances each, the
  tiny model, 3 iterations of batch 2, through model.train.train_loader and train_loop as fine-tuning runs them).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pycocotools import mask as coco_mask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 2 ** 20


def rss() -> int:
    return _status("VmRSS")


def peak() -> int:
    return _status("VmHWM")


def reset_peak() -> None:
    """Linux: the peak (VmHWM) starts again from the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def settle() -> int:
    gc.collect()
    return rss()


def _stub():
    return SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None)


def photo_store(root: Path):
    """One 6000x4000 photo with 20 proposals (bench/photos.py); the store and the image's id."""
    from bench.photos import photo_store as photos

    return photos(root, 1), 1


# --- the measures -----------------------------------------------------------------------------------------
def m_page(tmp: Path) -> dict:
    from annotator.label_tab import LabelTab

    store, image_id = photo_store(tmp)
    tab = LabelTab(store, _stub())
    tab.open(image_id, None)  # the first open imports and warms what every later one shares
    pages = []
    base = settle()
    for _ in range(10):
        pages.append(tab.open(image_id, None)[0])
    grown = settle() - base
    return {"pages": len(pages), "rss_per_page_mb": grown / len(pages) / MB,
            "estimate_per_page_mb": pages[-1].nbytes() / MB}


def m_edits(tmp: Path) -> dict:
    from annotator import canvas
    from annotator.labeling import LabelSession
    from annotator.page import Page

    store, image_id = photo_store(tmp)
    page = Page("bench", session=LabelSession(store, image_id))
    ls = page.session
    canvas.payload(page)
    base = settle()
    n_review = 0
    for k in range(40):
        i = k % len(ls.instances)
        canvas.apply(page, {"op": "accept" if k % 2 else "reject", "index": i})
        canvas.payload(page)
        n_review += 1
    per_review = (settle() - base) / n_review
    i = 0
    x, y, w, h = (float(v) for v in ls.instances.bboxes[i])
    base = settle()
    t = time.perf_counter()
    for k in range(100):
        pts = [[x + w * (j / 60), y + h / 2 + (k // 2 % 10) * 4] for j in range(60)]  # painted, then erased
        canvas.apply(page, {"op": "stroke", "index": i, "radius": 40, "points": pts, "erase": bool(k % 2)})
        canvas.payload(page)
    ms = (time.perf_counter() - t) * 1000 / 100
    per_stroke = (settle() - base) / 100
    # the magic wand's largest region (a 2048x2048 crop: a disc, as the canvas sends it, a COCO RLE of its crop),
    # added then taken away, on the same proposal; then polygons of 200 vertices over a 1500 px box, added
    side = 2048
    yy, xx = np.mgrid[:side, :side]
    disc = np.asfortranarray(((yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 2 - 8) ** 2).astype(np.uint8))
    counts = coco_mask.encode(disc)["counts"].decode("ascii")
    x0, y0 = int(max(0, min(x, 6000 - side))), int(max(0, min(y, 4000 - side)))
    base = settle()
    t = time.perf_counter()
    for k in range(40):
        canvas.apply(page, {"op": "region", "index": i, "x0": x0, "y0": y0, "w": side, "h": side, "counts": counts,
                            "subtract": bool(k % 2)})
        canvas.payload(page)
    ms_region = (time.perf_counter() - t) * 1000 / 40
    per_region = (settle() - base) / 40
    ring = [[3000 + 750 * np.cos(a), 2000 + 750 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 200, endpoint=False)]
    base = settle()
    t = time.perf_counter()
    for k in range(40):
        canvas.apply(page, {"op": "polygon", "index": i, "mode": "add" if k % 2 else "subtract", "points": ring})
        canvas.payload(page)
    ms_polygon = (time.perf_counter() - t) * 1000 / 40
    per_polygon = (settle() - base) / 40
    return {"rss_per_review_mb": per_review / MB, "rss_per_stroke_mb": per_stroke / MB, "ms_per_stroke": ms,
            "rss_per_region_mb": per_region / MB, "ms_per_region": ms_region,
            "rss_per_polygon_mb": per_polygon / MB, "ms_per_polygon": ms_polygon,
            "undo_steps": len(ls.edits), "history_mb": ls.edits.nbytes / MB}


def m_label_image(tmp: Path) -> dict:
    from annotator.routes import label_image

    store, image_id = photo_store(tmp)
    ops = []
    for k in range(500):
        i = k % 20
        if k % 5 == 4:
            ops.append({"op": "stroke", "index": i, "radius": 30,
                        "points": [[1000 + 20 * j, 1000 + 3 * k] for j in range(40)]})
        else:
            ops.append({"op": "accept" if k % 2 else "reject", "index": i})
    base = settle()
    reset_peak()
    t = time.perf_counter()
    got = label_image(store, _stub(), image_id, ops, "bench", "labeler")
    secs = time.perf_counter() - t
    top = peak()
    return {"messages": len(got["messages"]), "seconds": secs, "peak_growth_mb": (top - base) / MB,
            "held_after_mb": (settle() - base) / MB}


def m_many(tmp: Path) -> dict:
    from annotator import canvas, store_view
    from annotator.labeling import LabelSession
    from annotator.page import Page
    from bench.photos import many_store

    n, image_id = 20_000, 1
    store = many_store(tmp, n)
    base = settle()
    reset_peak()
    t = time.perf_counter()
    page = Page("bench", session=LabelSession(store, image_id))
    data = canvas.payload(page)
    open_s = time.perf_counter() - t
    open_peak = (peak() - base) / MB
    size = len(json.dumps(data)) / MB
    del page, data
    base = settle()
    reset_peak()
    t = time.perf_counter()
    gp = store_view.gallery(store, 1)
    gallery_s = time.perf_counter() - t
    return {"annotations": n, "open_seconds": open_s, "open_peak_growth_mb": open_peak, "canvas_data_mb": size,
            "gallery_seconds": gallery_s, "gallery_peak_growth_mb": (peak() - base) / MB,
            "gallery_items": len(gp.items)}


def m_stroke(tmp: Path) -> dict:
    from annotator import canvas
    from annotator.labeling import LabelSession
    from annotator.page import Page
    from db.errors import UserError

    store, image_id = photo_store(tmp)
    page = Page("bench", session=LabelSession(store, image_id))
    times = []
    for k in range(5):
        pts = [[500.0 + 100 * j, 1500.0 + 50 * k] for j in range(30)]  # 30 dabs of radius 1024 over 2,900 px
        t = time.perf_counter()
        canvas.apply(page, {"op": "stroke", "index": 0, "radius": 1024, "points": pts})
        times.append((time.perf_counter() - t) * 1000)
        page.session.undo()
    many = [[float(x), float(y)] for x, y in zip(np.linspace(0, 6000, 20_000), np.tile([0, 4000], 10_000))]
    t = time.perf_counter()
    try:
        canvas.apply(page, {"op": "stroke", "index": 0, "radius": 1024, "points": many})
        refused = False
    except UserError:
        refused = True
    return {"largest_stroke_ms_median": float(np.median(times)), "largest_stroke_ms_max": max(times),
            "over_limit_refused": refused, "over_limit_ms": (time.perf_counter() - t) * 1000}


def labeled_photos(tmp: Path, n_images: int, width: int, height: int, per_image: int, radius: tuple[int, int]):
    """A new store of ``n_images`` synthetic photo JPEGs (model.synthetic), each with ``per_image`` accepted
    instances and marked done (the image files it was made from deleted)."""
    from db.annotations import load, save_review
    from db.categories import add as add_category
    from db.ingest import ingest
    from db.store import Settings, Store
    from model.synthetic import photo_instances, write_photo

    store = Store(Settings(store_dir=tmp / "store"))
    files = [write_photo(tmp / f"f{k:04d}.jpg", width, height, seed=k) for k in range(n_images)]
    ids = [i for i, _ in ingest(store, files).added]
    cid = add_category(store, "blob", "", [], [])
    for k, image_id in enumerate(ids):
        inst = photo_instances(width, height, per_image, cid, seed=k, radius=radius)
        for i in range(len(inst)):
            inst.states[i], inst.sources[i], inst.scores[i] = "accepted", "human", None
        save_review(store, image_id, load(store, image_id).image.row_version, inst, "bench", status="done")
    for f in files:
        f.unlink()
    return store


def m_train(tmp: Path, n_images: int) -> dict:
    import torch

    from model import data
    from model.train import TrainOptions, train_loader

    torch.set_num_threads(2)
    store = labeled_photos(tmp, n_images, 1920, 1080, 15, (40, 200))
    samples = data.labeled_samples(store, heldout=False)
    cmap = data.store_category_map(store)
    ds = data.TrainDataset(samples, cmap)
    loader = train_loader(ds, TrainOptions(batch_size=2), torch.device("cpu"))
    base = settle()
    reset_peak()
    t = time.perf_counter()
    seen = 0
    for imgs, targets in loader:
        seen += len(imgs)
        del imgs, targets
    secs = time.perf_counter() - t
    top = peak()
    decoded = sum(c is not None for s in samples for c in s.instances._crops)
    return {"labeled_images": len(samples), "instances": sum(len(s.instances) for s in samples), "seen": seen,
            "peak_rss_mb": top / MB, "peak_growth_mb": (top - base) / MB, "seconds": secs,
            "decoded_masks_kept": decoded}


def m_photo_train(tmp: Path) -> dict:
    """Peak RSS of a short training on 24 MP photos: four synthetic 6000x4000 JPEGs with 5 instances each,
    the tiny model, 3 iterations of batch 2 through model.train.train_loader and train_loop as fine_tune
    runs them (on the CPU: the images take the way they take to a GPU, less the pinned copy)."""
    import torch

    from model import data
    from model.build import build
    from model.config import get
    from model.train import TrainOptions, train_loader, train_loop

    torch.set_num_threads(2)
    torch.manual_seed(0)
    store = labeled_photos(tmp, 4, 6000, 4000, 5, (150, 900))
    samples = data.labeled_samples(store, heldout=False)
    cmap = data.store_category_map(store)
    config = get("tiny")
    model = build(config, cmap)
    opts = TrainOptions(batch_size=2)
    loader = train_loader(data.TrainDataset(samples, cmap, config=config), opts, torch.device("cpu"))
    base = settle()
    reset_peak()
    t = time.perf_counter()
    curve = train_loop(model, loader, opts, 3, torch.device("cpu"), None, lambda p: None)
    secs = time.perf_counter() - t
    top = peak()
    return {"images": len(samples), "iterations": len(curve), "rss_before_mb": base / MB, "peak_rss_mb": top / MB,
            "peak_growth_mb": (top - base) / MB, "seconds": secs}


def m_propose(tmp: Path, whole: bool = False) -> dict:
    """Proposals on the 24 MP photo (model.predict.propose, as app.py propose runs it): the tiny model,
    untrained, every detection slot kept (min score 0: 50 masks pasted and encoded at photo size, the
    worst case); peak RSS growth and seconds of one call after a warm-up. ``whole``: the photo decoded
    whole, as before issue 22, instead of at the scale the network shrinks it to."""
    import torch

    from model.build import build, set_eval_size
    from model.config import get
    from model.data import read_pixels, store_category_map
    from model.predict import Predictor, propose

    torch.set_num_threads(2)
    torch.manual_seed(0)
    store, image_id = photo_store(tmp)
    config = get("tiny")
    net = build(config, store_category_map(store))
    set_eval_size(net, config)

    class Whole(Predictor):
        def read(self, path, height, width):
            return read_pixels(path, height, width)

    pred = (Whole if whole else Predictor)(store_category_map(store), net=net, device="cpu", batch_size=1)
    propose(store, [image_id], pred, min_score=0.0, chunk=1)  # warm-up
    base = settle()
    reset_peak()
    t = time.perf_counter()
    r = propose(store, [image_id], pred, min_score=0.0, chunk=1)
    secs = time.perf_counter() - t
    top = peak()
    return {"proposals": r["proposals"], "peak_growth_mb": (top - base) / MB, "seconds": secs}


ANN = """
import sys
from gradio_client import Client
url, tabs = sys.argv[1], int(sys.argv[2])
clients = [Client(url, auth=("ann", "ann-password"), verbose=False) for _ in range(tabs)]
print("ready", flush=True)
for line in sys.stdin:
    r = int(line)
    jobs = [clients[k % tabs].submit(str(1 + (k + r) % 12), api_name="/open_id") for k in range(12)]
    print("queued", flush=True)
    for j in jobs:
        j.result(timeout=300)
    print("done", flush=True)
"""  # Ann: 12 opens queued at once, from one page or from twelve (her own process, as her own browser is)


def m_queue(tmp: Path) -> dict:
    """Bob's open while Ann has 12 opens of 24 MP photos queued (from one page, then from 12), against Bob's
    open on an idle server; the app, Ann and Bob in processes of their own, all through gradio_client (as a
    browser's Open does)."""
    import socket
    import statistics
    import urllib.request

    from gradio_client import Client

    photo_store_many = __import__("bench.photos", fromlist=["photo_store"]).photo_store
    photo_store_many(tmp, 14)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--store", str(tmp / "pstore"), "--port",
                               str(port), "--auth", "ann:ann-password", "--auth", "bob:bob-password"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        me = Client(url, auth=("bob", "bob-password"), verbose=False)
        me.predict("14", api_name="/open_id")
        out = {}
        for how, tabs in (("one_page", 1), ("twelve_pages", 12)):
            ann = subprocess.Popen([sys.executable, "-c", ANN, url, str(tabs)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, bufsize=1)
            assert ann.stdout.readline().strip() == "ready"
            idle, loaded = [], []
            for r in range(5):
                t = time.perf_counter()
                me.predict(str(13 + r % 2), api_name="/open_id")
                idle.append(time.perf_counter() - t)
                ann.stdin.write(f"{r}\n")
                assert ann.stdout.readline().strip() == "queued"
                time.sleep(0.05)  # hers are in the queue first
                t = time.perf_counter()
                me.predict(str(14 - r % 2), api_name="/open_id")
                loaded.append(time.perf_counter() - t)
                assert ann.stdout.readline().strip() == "done"
            ann.stdin.close()
            ann.wait(timeout=60)
            out[f"{how}_idle_open_s"] = statistics.median(idle)
            out[f"{how}_open_behind_12_s"] = statistics.median(loaded)
            out[f"{how}_ratio"] = statistics.median(loaded) / statistics.median(idle)
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)


MEASURES = {"page": m_page, "edits": m_edits, "label_image": m_label_image, "many": m_many, "stroke": m_stroke,
            "queue": m_queue, "train60": lambda tmp: m_train(tmp, 60), "train600": lambda tmp: m_train(tmp, 600),
            "photo_train": m_photo_train, "propose": m_propose, "propose_whole": lambda tmp: m_propose(tmp, True)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=sorted(MEASURES))
    ap.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)  # one, in this process
    args = ap.parse_args()
    if args.measure:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps({args.measure: MEASURES[args.measure](Path(tmp))}), flush=True)
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} · {platform.machine()} · {os.cpu_count()} cores · "
          f"python {platform.python_version()} · each measure in a fresh process", flush=True)
    for name in args.only or list(MEASURES):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--measure", name], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-3000:]}", flush=True)
            continue
        got = json.loads(out.stdout.strip().splitlines()[-1])[name]
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in got.items())
        print(f"{name:<12} {shown}   ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
