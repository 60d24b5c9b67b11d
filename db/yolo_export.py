"""YOLO export in Ultralytics' dataset layout: the images and annotations ``db.export.Rule`` picks (by default
the images whose labels are done), written by ``db.export`` (a new folder or a zip, nothing half-done).

Layout::

    data.yaml            path, train, val, names (and for pose kpt_shape, flip_idx)
    train.txt, val.txt   the store's fixed held-out split (db.annotations.is_heldout), when both have images
    images/<id>_<name>   each image's file (<id> its image id: names never collide, whatever folders held them)
    labels/<id>_<name>.txt  one line per object, coordinates normalized by the image's width and height

Two tasks, since Ultralytics reads one kind of line per dataset:

- ``seg``: ``class x1 y1 x2 y2 ...``, every category a class. A mask is one polygon on its pixel corners;
  several parts and holes are joined into that one polygon by zero-width bridges (each traversed there and
  back, as Ultralytics' own COCO converter joins parts), so an even-odd fill (cv2.fillPoly, pycocotools)
  gives back the mask's pixels. A single COCO polygon is written as given; several that do not overlap are
  bridged as given, overlapping ones are traced from their union.
- ``pose``: ``class cx cy w h px1 py1 v1 ...`` (K keypoints, v as in COCO: 0 not labeled, 1 hidden, 2 seen),
  the categories with keypoints as classes, all with one K (``kpt_shape: [K, 3]``); ``flip_idx`` when every
  keypoint name with 'left' or 'right' in it has its partner, else left out (and said why in data.yaml).

``auto`` (the default) is ``pose`` when every category has keypoints, else ``seg``. Classes are 0..n-1 in the
order of the categories' COCO ids; data.yaml gives each class's COCO id in a comment. Left out, counted and
named in the summary (never silently): crowd regions (as Ultralytics' converter does: they mark a region to
ignore, which YOLO cannot), in ``seg`` an object without a mask, in ``pose`` an object of a category without
keypoints. Every image gets a label file (an empty one is a true negative).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Literal

import numpy as np

from db import annotations
from db import export as out_files
from db import masks
from db.errors import UserError
from db.export import Rule
from db.instances import Instances
from db.store import Store

Task = Literal["auto", "seg", "pose"]
NAMED = 5  # annotation ids named in the summary for each reason an object was left out
_STEM_BYTES = 120  # of the image's own name kept in the exported name (UTF-8), after "<id>_"


@dataclasses.dataclass(frozen=True)
class YoloClass:
    index: int  # 0..n-1
    coco_id: int
    name: str
    keypoints: list[str] | None


def plan_classes(cats: list[out_files.CategoryRow], task: Task) -> tuple[str, list[YoloClass]]:
    """The task (``auto`` decided) and its classes, by COCO id; raises UserError naming a category whose name
    YAML or YOLO cannot hold, or pose categories whose keypoint counts differ."""
    for c in cats:
        bad = next((ch for ch in c.name if ord(ch) < 32 or 127 <= ord(ch) < 160), None)
        if bad is not None or not c.name.strip():
            raise UserError(f"category {c.id} {c.name!r}: its name " + (
                f"holds the control character {bad!r} (a line break or tab), which data.yaml's names cannot hold"
                if bad is not None else "is blank") + "; rename it in the Categories tab; nothing was written")
        try:
            c.name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"category {c.id} {c.name!r}: its name is not valid text (a lone surrogate); rename "
                            "it; nothing was written") from None
    with_kps = [c for c in cats if c.keypoints]
    if task == "auto":
        task = "pose" if cats and len(with_kps) == len(cats) else "seg"
    if task == "pose":
        if not with_kps:
            raise UserError("a YOLO pose export needs a category with keypoints, and none has any; export as seg")
        sizes = {len(c.keypoints) for c in with_kps}
        if len(sizes) > 1:
            listed = ", ".join(f"{c.id} {c.name!r}: {len(c.keypoints)}" for c in with_kps)
            raise UserError(f"a YOLO pose dataset has one number of keypoints (kpt_shape), and these categories "
                            f"differ ({listed}); export as seg, or give them the same keypoints")
        cats = with_kps
    elif task != "seg":
        raise UserError(f"YOLO task {task!r}: choose seg, pose or auto")
    return task, [YoloClass(k, c.id, c.name, c.keypoints) for k, c in enumerate(cats)]


_SIDES = re.compile(r"left|right", re.IGNORECASE)


def flip_index(names: list[str]) -> tuple[list[int] | None, str]:
    """Ultralytics' ``flip_idx`` (each keypoint's mirror image's index) from keypoint names: 'left' and
    'right' swapped (any case). None, with why, when a name with a side has no partner, or none has a side."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}
    where = {n: k for k, n in enumerate(names)}
    out, paired = [], False
    for k, n in enumerate(names):
        if not _SIDES.search(n):
            out.append(k)
            continue
        partner = _SIDES.sub(lambda m: swap.get(m.group(0), m.group(0)), n)
        if partner not in where or partner == n:
            return None, f"keypoint {n!r} has no partner {partner!r} to swap with when an image is flipped"
        out.append(where[partner])
        paired = True
    if not paired:
        return None, "no keypoint name says left or right, so which mirror which is unknown"
    return out, ""


def image_names(rows: list[out_files.ImageRow]) -> list[str]:
    """Each image's name under images/: ``<id>_<its name>``, the name's folders joined with '_', every
    character other than a letter, digit, '-', '_' or '.' made '_', cut to _STEM_BYTES bytes, and the media
    file's own extension (its real format). Stable (the same image always gets the same name) and unique."""
    out = []
    for r in rows:
        stem = r.file_name.rsplit(".", 1)[0] if "." in r.file_name.rsplit("/", 1)[-1] else r.file_name
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
        stem = stem.encode("utf-8")[:_STEM_BYTES].decode("utf-8", "ignore").strip(".") or "image"
        ext = Path(r.media_path).suffix.lower() or ".png"
        out.append(f"{r.id}_{stem}{ext}")
    return out


def _num(v: float) -> str:
    """A coordinate normalized to [0, 1] (clamped), at most 6 decimals, no trailing zeros."""
    return f"{min(max(float(v), 0.0), 1.0):.6f}".rstrip("0").rstrip(".")


def _closest(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices of the closest pair of vertices of ``a`` and ``b`` (in row blocks: at most 2**20 pairs at once)."""
    best, at = np.inf, (0, 0)
    rows = max(1, (1 << 20) // max(1, len(b)))
    for s in range(0, len(a), rows):
        d = ((a[s:s + rows, None, :] - b[None, :, :]) ** 2).sum(-1)
        k = int(d.argmin())
        if d.flat[k] < best:
            best, at = float(d.flat[k]), (s + k // len(b), k % len(b))
    return at


def one_polygon(rings: list[list[float]]) -> list[float]:
    """Several polygons as one: each joined to the next by a bridge between their closest vertices, walked
    there and back (zero width), so an even-odd fill of the result fills what the rings fill together (parts
    side by side; a hole, itself a ring, stays a hole)."""
    if len(rings) == 1:
        return list(rings[0])
    pts = [np.asarray(r, np.float64).reshape(-1, 2) for r in rings]
    links = [_closest(pts[k], pts[k + 1]) for k in range(len(pts) - 1)]

    def closed(ring: np.ndarray, start: int) -> np.ndarray:  # round the ring from ``start`` back to it
        return np.concatenate([ring[start:], ring[:start], ring[start:start + 1]])

    walk = closed(pts[-1], links[-1][1])
    for k in range(len(pts) - 2, -1, -1):
        entry = links[k - 1][1] if k > 0 else links[k][0]
        ring = closed(pts[k], entry)
        at = (links[k][0] - entry) % len(pts[k])  # where the bridge to ring k + 1 leaves (and comes back)
        walk = np.concatenate([ring[:at + 1], walk, ring[at:]])
    return walk[:-1].reshape(-1).tolist()  # (the walk ends where it began)


class _Yolo:
    """Label lines, image by image, and what was left out: reason -> annotation ids."""

    def __init__(self, task: str, classes: list[YoloClass]):
        self.task = task
        self.index = {c.coco_id: c for c in classes}
        self.left_out: dict[str, list] = {}
        self.objects = 0

    def _leave(self, why: str, ann_id) -> None:
        self.left_out.setdefault(why, []).append(ann_id)

    def label(self, r: out_files.ImageRow, inst: Instances) -> bytes:
        lines = []
        for i in range(len(inst)):
            cls = self.index.get(inst.category_ids[i])
            if inst.iscrowd[i]:
                self._leave("crowd region (YOLO has no region to ignore)", inst.ann_ids[i])
            elif cls is None:
                self._leave("category without keypoints (a pose export)", inst.ann_ids[i])
            else:
                try:
                    line = self._seg(inst, i) if self.task == "seg" else self._pose(inst, i, cls)
                except masks.MaskError as e:
                    raise out_files.invalid(inst, i, r.id, e) from None
                if line is not None:
                    lines.append(f"{cls.index} {line}")
        self.objects += len(lines)
        return "".join(line + "\n" for line in lines).encode("ascii")

    def _seg(self, inst: Instances, i: int) -> str | None:
        seg = inst.segmentations[i]
        if not seg:
            self._leave("no mask (a box or keypoints only)", inst.ann_ids[i])
            return None
        h, w = inst.height, inst.width
        polygons = inst.polygons(i)
        if polygons is not None:
            masks.check(polygons, h, w)
            if len(polygons) > 1 and masks.area(polygons, h, w) != sum(masks.area([p], h, w) for p in polygons):
                polygons = None  # parts overlap: an even-odd fill would cut the overlap out; trace the union
        if polygons is None:
            crop = inst.crop(i)
            if crop is None or crop.empty():
                self._leave("empty mask", inst.ann_ids[i])
                return None
            polygons = [[v + (crop.x if k % 2 == 0 else crop.y) for k, v in enumerate(p)]
                        for p, _ in masks.mask_to_rings(crop.m)]
        flat = one_polygon(polygons)
        return " ".join(_num(v / (w if k % 2 == 0 else h)) for k, v in enumerate(flat))

    def _pose(self, inst: Instances, i: int, cls: YoloClass) -> str | None:
        h, w = inst.height, inst.width
        x, y, bw, bh = inst.tight_bbox(i)
        x0, y0 = min(max(x, 0), w), min(max(y, 0), h)
        x1, y1 = min(max(x + bw, 0), w), min(max(y + bh, 0), h)
        if x1 <= x0 or y1 <= y0:
            self._leave("empty box (nothing of it inside the image)", inst.ann_ids[i])
            return None
        parts = [_num((x0 + x1) / 2 / w), _num((y0 + y1) / 2 / h), _num((x1 - x0) / w), _num((y1 - y0) / h)]
        kps = inst.keypoints_xyv(i)
        for k in range(len(cls.keypoints)):
            if kps is None or k >= len(kps) or kps[k, 2] <= 0:
                parts += ["0", "0", "0"]
            else:
                parts += [_num(kps[k, 0] / w), _num(kps[k, 1] / h), str(int(kps[k, 2]))]
        return " ".join(parts)

    def notes(self) -> list[str]:
        lines = []
        for why, ids in sorted(self.left_out.items()):
            named = ", ".join(str(a) for a in sorted(ids, key=lambda a: (a is None, a))[:NAMED])
            lines.append(f"left out {len(ids)} object(s): {why}, e.g. annotation {named}")
        return lines


def data_yaml(task: str, classes: list[YoloClass], path: str, split: tuple[str, str], why_no_flip: str,
              flip: list[int] | None, split_note: str) -> bytes:
    """data.yaml, written by hand (names JSON-quoted: a YAML double-quoted string holds any text)."""
    kind = ("segment: class x1 y1 x2 y2 ... (a polygon)" if task == "seg"
            else "pose: class cx cy w h px1 py1 v1 ... (box and keypoints)")
    lines = ["# maskloop YOLO export (Ultralytics layout): images/, labels/<image stem>.txt, one line per object,",
             f"# coordinates normalized to 0..1 by the image's width and height. Task: {kind}.",
             f"path: {json.dumps(path, ensure_ascii=False)}" if path else
             "path:  # empty: the folder this file is in (set it to where you unpacked the zip for older Ultralytics)",
             f"train: {split[0]}", f"val: {split[1]}  # {split_note}", "", "names:"]
    lines += [f"  {c.index}: {json.dumps(c.name, ensure_ascii=False)}  # COCO category id {c.coco_id}" for c in classes]
    if task == "pose":
        lines += ["", f"kpt_shape: [{len(classes[0].keypoints)}, 3]  # keypoints: "
                  + ", ".join(classes[0].keypoints)]
        lines.append(f"flip_idx: [{', '.join(map(str, flip))}]" if flip is not None
                     else f"# no flip_idx: {why_no_flip} (Ultralytics then does not flip images left-right)")
    return ("\n".join(lines) + "\n").encode("utf-8")


def export(store: Store, out: str | Path, *, task: Task = "auto", include_proposals: bool = False,
           all_images: bool = False) -> dict:
    """Write the YOLO dataset to the new (or empty) folder ``out``, or to ``out`` ending in .zip (see the
    module's docstring). Every name and category is checked before anything is written; the export then
    streams image by image. Returns the counts and ``notes``: lines for the summary (what was left out)."""
    out = Path(out)
    rule = Rule(include_proposals, all_images)
    task, classes = plan_classes(out_files.categories(store), task)
    flip, why_no_flip = (None, "")
    if task == "pose":
        flips = [flip_index(c.keypoints) for c in classes]
        flip, why_no_flip = flips[0]
        if any(f[0] != flip for f in flips[1:]):
            flip, why_no_flip = None, "the pose categories' keypoint names mirror differently"
    rows = out_files.images(store, rule)
    names = image_names(rows)
    labels = [f"labels/{n.rsplit('.', 1)[0]}.txt" for n in names]
    out_files.refuse(out_files.name_problems([(r.id, f"images/{n}") for r, n in zip(rows, names)]
                                             + [(r.id, lb) for r, lb in zip(rows, labels)]))
    val = [n for r, n in zip(rows, names) if annotations.is_heldout(r.id)]
    train = [n for r, n in zip(rows, names) if not annotations.is_heldout(r.id)]
    zipped = out.suffix.lower() == ".zip"
    yolo = _Yolo(task, classes)
    with out_files.output(out) as o:
        for (r, inst), name, label in zip(out_files.instances(store, rule, rows), names, labels):
            o.copy(f"images/{name}", store.media_file(r.media_path))
            o.write(label, yolo.label(r, inst))
        if train and val:
            split, note = ("train.txt", "val.txt"), "the store's fixed held-out split (one image in five, by id)"
            o.write("train.txt", "".join(f"./images/{n}\n" for n in train).encode("utf-8"))
            o.write("val.txt", "".join(f"./images/{n}\n" for n in val).encode("utf-8"))
        else:
            split, note = ("images", "images"), "every image: too few for the store's held-out split to hold some"
        o.write("data.yaml", data_yaml(task, classes, "" if zipped else str(out.resolve()), split, why_no_flip,
                                       flip, note))
    notes = yolo.notes()
    if task == "pose" and flip is None:
        notes.append(f"no flip_idx in data.yaml: {why_no_flip}")
    return {"task": task, "images": len(rows), "objects": yolo.objects, "classes": len(classes),
            "left_out": sum(len(v) for v in yolo.left_out.values()), "notes": notes}
