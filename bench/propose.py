"""Proposals, equal work on both sides: from the same image files on disk to every image's detections on
the host as COCO RLE masks and keypoint lists, with the same trained weights (bench/prepared.py).

- baseline: what a careful torchvision user writes: PIL decode, the stock torchvision forward (its heads and
  its mask-by-mask paste) with the proposal threshold passed as torchvision's ``box_score_thresh`` (so the
  mask and keypoint heads run only on the boxes kept: the documented argument a careful user sets; until
  2026-12-06 the baseline kept torchvision's default 0.05 and dropped weak detections afterwards, which
  made maskloop look 1.3-1.9x faster than it is), under ``torch.inference_mode()``, one host copy of each
  image's masks and one pycocotools encode call per image, keypoints as lists; batches of the same size as
  the project's.
- maskloop: ``model.predict.propose`` as ``app.py propose`` runs it: the threshold applied before the mask
  and keypoint heads, the keypoint head only on keypoint classes, masks pasted all at once over their boxes
  and encoded from the crops, decoding and row writing overlapped with inference; it also writes the
  proposal rows to the store, which the baseline does not have to do.

Two measures, each side alternating with the other in every repeat, the ratio reported per pair:
latency of one image at batch 1 (median and p90 over images) and throughput of the whole set at batch
``--batch-size``.

    .venv/bin/python bench/propose.py --size tiny --image-size 128 --images 32 --repeats 5
    python bench/propose.py --size full --image-size 800 --images 16 --repeats 5 --device cuda   # GPU
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import RoIHeads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prepared import checkpoint, crowded_store  # noqa: E402
from db import annotations  # noqa: E402
from db.media import load_rgb  # noqa: E402
from db.schema import ModelVersion  # noqa: E402
from model import build as mb  # noqa: E402
from model.data import store_category_map  # noqa: E402
from model.predict import Predictor, pick_device, propose  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Baseline:
    """The careful torchvision user's proposal loop."""

    def __init__(self, net: torch.nn.Module, cmap, device: torch.device, min_score: float):
        self.net, self.cmap, self.device, self.min_score = net, cmap, device, min_score

    @torch.inference_mode()
    def run(self, paths: list[Path], batch: int) -> list[list[dict]]:
        out = []
        for k in range(0, len(paths), batch):
            pixels = [np.asarray(load_rgb(p)) for p in paths[k:k + batch]]
            x = [torch.from_numpy(p.copy()).to(self.device).permute(2, 0, 1).float().div_(255) for p in pixels]
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                results = self.net(x)
            for r in results:
                keep = r["scores"] >= self.min_score
                masks = (r["masks"][keep, 0] > 0.5).cpu().numpy()  # one host copy of the image's masks
                rles = (mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
                        if len(masks) else [])
                boxes, scores = r["boxes"][keep].cpu().numpy(), r["scores"][keep].cpu().numpy()
                labels = r["labels"][keep].cpu().numpy()
                kps = r["keypoints"][keep].cpu().numpy() if "keypoints" in r else None
                out.append([{"category_id": self.cmap.category_id(int(lab)), "score": float(s),
                             "bbox": [float(v) for v in b], "segmentation": rle,
                             "keypoints": kps[j].reshape(-1).tolist() if kps is not None else None}
                            for j, (lab, s, b, rle) in enumerate(zip(labels, scores, boxes, rles))])
        _sync(self.device)
        return out


def standin_net(size: str, cmap, torch_home: Path) -> torch.nn.Module:
    """A ``size`` network started from stand-in COCO weights (``model.standin``), as a fine-tune from COCO
    starts it: the real loading path (``load_coco_nets``, ``init_from_coco``) from a temporary TORCH_HOME."""
    import os

    from model import standin

    standin.write(torch_home)
    os.environ["TORCH_HOME"] = str(torch_home)
    net = mb.build(mb.get(size), cmap)
    mb.init_from_coco(net, mb.load_coco_nets("coco", mb.get(size)), cmap)
    return net


def agreement(plain_out: list[list[dict]], pred: Predictor, store, ids: list[int], min_score: float,
              truth: dict) -> str:
    """How alike the two sides' results are, and how good: detections of each, the mask IoU of each baseline
    detection with maskloop's best match of the same class, and each side's COCO AP against the images'
    exact labels (maskloop decodes a JPEG photo at reduced size: equal work must give proposals as good)."""
    from model import evaluate as ev

    rows = annotations.images(store, ids)
    ious, mine_all, theirs_all = [], [], []
    for iid, dets in zip(ids, plain_out):
        im = rows[iid]
        pix = pred.read(store.media_file(im.media_path), im.height, im.width)
        ours = pred.predict([pix], min_score, [(im.height, im.width)])[0]
        mine_all += ours.to_coco(iid, with_score=True)
        for d in dets:
            x0, y0, x1, y1 = d["bbox"]
            rle = dict(d["segmentation"], counts=d["segmentation"]["counts"].decode("ascii"))
            theirs_all.append({"image_id": iid, "category_id": d["category_id"], "score": d["score"],
                               "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": rle,
                               **({"keypoints": d["keypoints"]} if d["keypoints"] else {})})
            same = [m["segmentation"] for m in mine_all if m["image_id"] == iid and m["category_id"] == d["category_id"]]
            ious.append(float(mask_utils.iou([rle], same, [0] * len(same)).max()) if same else 0.0)
    mean = statistics.mean(ious) if ious else float("nan")
    share = sum(x >= 0.9 for x in ious) / max(1, len(ious))
    cmap = pred.cmap

    def aps(dets: list[dict]) -> str:
        m = ev.coco_evaluation(truth, dets, cmap).metrics
        return " / ".join("-" if m.get(k) is None else f"{m[k]:.3f}" for k in ("segm", "bbox", "keypoints"))

    return (f"baseline {len(theirs_all)}, maskloop {len(mine_all)}; each baseline mask's best maskloop match: mean "
            f"IoU {mean:.3f}, {100 * share:.0f} % at IoU >= 0.9; AP against the exact labels (segm / bbox / "
            f"keypoints): baseline {aps(theirs_all)}, maskloop {aps(mine_all)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-score", type=float, default=0.3, help="app.py propose's default")
    ap.add_argument("--prep-iters", type=int, default=300, help="training iterations of the prepared checkpoint")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--weights", choices=["prepared", "standin"], default="prepared",
                    help="prepared: a checkpoint trained on this kind of data (bench/prepared.py); standin: the "
                         "network started from stand-in COCO weights (model/standin.py: random, so every "
                         "detection slot fills, the most post-processing; --size full, whose training would "
                         "take hours on a CPU)")
    ap.add_argument("--objects", type=int, default=4, help="at most this many objects per image (the demo's)")
    ap.add_argument("--format", choices=["png", "jpeg"], default="png",
                    help="how the image files are stored (jpeg: quality 90, as cameras write photos)")
    a = ap.parse_args()
    device = pick_device(a.device)
    ck = checkpoint(a.size, a.image_size, a.prep_iters, a.device) if a.weights == "prepared" else None
    with tempfile.TemporaryDirectory() as tmp:
        store, truth = crowded_store(Path(tmp), a.images, a.image_size, a.objects, a.format)
        cmap = store_category_map(store)
        ids = annotations.image_ids(store)
        paths = [store.media_file(r.media_path) for r in annotations.images(store, ids).values()]
        if ck is not None:
            net, config, _ = mb.load_checkpoint(ck, cmap)
        else:
            net, config = standin_net(a.size, cmap, Path(tmp) / "torch_home"), mb.get(a.size)
        mb.set_eval_size(net, config)
        with store.transaction() as s:  # the version the proposal rows name
            mv = ModelVersion(size=a.size, checkpoint=ck.name if ck else "standin", category_map=cmap.to_dict())
            s.add(mv)
            s.flush()
            version = types.SimpleNamespace(id=mv.id)
        fast = {b: Predictor(cmap, net=net, version=version, device=str(device), batch_size=b) for b in (1, a.batch_size)}
        plain_net = mb.build(config, cmap)
        plain_net.load_state_dict(net.state_dict())
        plain_net.roi_heads.__class__ = RoIHeads  # torchvision's own heads, same weights
        plain_net.roi_heads.score_thresh = a.min_score  # box_score_thresh, as a careful user passes it
        mb.set_eval_size(plain_net, config)
        if device.type == "cuda":  # as maskloop's side on a GPU: NHWC for the fp16 convolutions
            plain_net.to(memory_format=torch.channels_last)
        plain = Baseline(plain_net.eval().to(device), cmap, device, a.min_score)

        def ours_latency() -> list[float]:
            times = []
            for i in ids:
                t = time.perf_counter()
                propose(store, [i], fast[1], min_score=a.min_score, chunk=1)
                _sync(device)
                times.append(time.perf_counter() - t)
            return times

        def plain_latency() -> list[float]:
            times = []
            for p in paths:
                t = time.perf_counter()
                plain.run([p], 1)
                times.append(time.perf_counter() - t)
            return times

        def ours_batch() -> float:
            t = time.perf_counter()
            r = propose(store, ids, fast[a.batch_size], min_score=a.min_score)
            _sync(device)
            ours_batch.proposals = r["proposals"]
            return time.perf_counter() - t

        def plain_batch() -> float:
            t = time.perf_counter()
            got = plain.run(paths, a.batch_size)
            plain_batch.detections = sum(len(g) for g in got)
            plain_batch.rle_chars = sum(len(d["segmentation"]["counts"]) for g in got for d in g)
            return time.perf_counter() - t

        ours_latency(), plain_latency(), ours_batch(), plain_batch()  # warm-up (allocators, caches, lazy inits)
        agree = agreement(plain.run(paths, a.batch_size), fast[a.batch_size], store, ids, a.min_score, truth)
        rows = []
        for r in range(a.repeats):
            order = [("plain", plain_latency, plain_batch), ("ours", ours_latency, ours_batch)]
            if r % 2:
                order.reverse()
            got = {}
            for name, lat, thr in order:
                got[name] = (lat(), thr())
            rows.append(got)
            pl, po = got["plain"], got["ours"]
            print(f"repeat {r + 1}: batch-1 median plain {1000 * statistics.median(pl[0]):.1f} ms / ours "
                  f"{1000 * statistics.median(po[0]):.1f} ms; batch {a.batch_size}: plain {len(ids) / pl[1]:.2f} img/s, "
                  f"ours {len(ids) / po[1]:.2f} img/s", flush=True)

    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\ndevice: {dev}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"size {a.size}, {len(ids)} images of {a.image_size}px, {ck.name if ck else 'stand-in COCO weights'}, min score {a.min_score}; "
          f"{plain_batch.detections} detections per pass (mean RLE {plain_batch.rle_chars / max(1, plain_batch.detections):.0f} "
          f"characters), maskloop wrote {ours_batch.proposals} rows")
    print(f"the two sides' detections: {agree}")

    def pct(v, q):
        return float(np.percentile(v, q))

    lat_pairs = [statistics.median(g["plain"][0]) / statistics.median(g["ours"][0]) for g in rows]
    thr_pairs = [g["plain"][1] / g["ours"][1] for g in rows]
    all_plain = [t for g in rows for t in g["plain"][0]]
    all_ours = [t for g in rows for t in g["ours"][0]]
    print(f"batch-1 latency per image: plain median {1000 * statistics.median(all_plain):.1f} ms, p90 "
          f"{1000 * pct(all_plain, 90):.1f} ms; maskloop median {1000 * statistics.median(all_ours):.1f} ms, p90 "
          f"{1000 * pct(all_ours, 90):.1f} ms")
    print(f"batch-1 speed-up per pair (plain/ours): {' '.join(f'{x:.2f}' for x in lat_pairs)}; "
          f"median {statistics.median(lat_pairs):.2f}x")
    print(f"batch {a.batch_size} throughput: plain {len(ids) / statistics.median([g['plain'][1] for g in rows]):.2f} img/s, "
          f"maskloop {len(ids) / statistics.median([g['ours'][1] for g in rows]):.2f} img/s")
    print(f"batch {a.batch_size} speed-up per pair (plain/ours): {' '.join(f'{x:.2f}' for x in thr_pairs)}; "
          f"median {statistics.median(thr_pairs):.2f}x")


if __name__ == "__main__":
    main()
