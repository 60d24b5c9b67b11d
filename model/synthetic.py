"""Synthetic images with exact ground truth, so the whole loop can be shown and tested offline.

Three shape classes (non-contiguous COCO ids, to exercise the label mapping) and a person-like stick
figure with COCO's 17 keypoint names and skeleton. Objects drawn later occlude earlier ones; masks
are exact, and a keypoint covered by a later object is marked occluded (v=1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from db import crops
from db.instances import Instances

PERSON_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
]
PERSON_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
    [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person", "keypoints": PERSON_KEYPOINTS,
     "skeleton": PERSON_SKELETON},
    {"id": 3, "name": "disc", "supercategory": "shape"},
    {"id": 5, "name": "triangle", "supercategory": "shape"},
    {"id": 9, "name": "square", "supercategory": "shape"},
]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(0, 256, 3)
    noise = rng.normal(0, 18, (size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _shape_mask(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.09, 0.2) * size
    cx, cy = rng.uniform(r, size - r, 2)
    if kind == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == "square":
        a = rng.uniform(0, math.pi / 2)
        pts = [(cx + r * math.cos(a + k * math.pi / 2), cy + r * math.sin(a + k * math.pi / 2)) for k in range(4)]
        d.polygon(pts, fill=1)
    else:
        a = rng.uniform(0, 2 * math.pi)
        pts = [(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
               for k in range(3)]
        d.polygon(pts, fill=1)
    return np.asarray(img, dtype=bool)


def _person(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A stick figure: returns (mask, keypoints (17, 2))."""
    h = rng.uniform(0.45, 0.8) * size  # figure height
    cx = rng.uniform(0.25 * size, 0.75 * size)
    top = rng.uniform(0.02 * size, size - h - 0.02 * size)
    u = h / 8.0  # body unit
    j = lambda dx, dy: (cx + dx * u + rng.normal(0, 0.08) * u, top + dy * u + rng.normal(0, 0.08) * u)  # noqa: E731
    sway = rng.uniform(-0.8, 0.8)
    kp = np.array([
        j(0, 0.8), j(-0.25, 0.6), j(0.25, 0.6), j(-0.45, 0.75), j(0.45, 0.75),  # face
        j(-1.0, 1.9), j(1.0, 1.9),  # shoulders
        j(-1.5 + sway, 3.2), j(1.5 + sway, 3.2),  # elbows
        j(-1.8 + 1.5 * sway, 4.4), j(1.8 + 1.5 * sway, 4.4),  # wrists
        j(-0.7, 4.4), j(0.7, 4.4),  # hips
        j(-0.9 - sway / 2, 6.1), j(0.9 - sway / 2, 6.1),  # knees
        j(-1.0, 7.8), j(1.0, 7.8),  # ankles
    ])
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    width = max(3, int(0.9 * u))  # limbs as thick as a body part, not a wire
    for a, b in [(5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16)]:
        d.line([tuple(kp[a]), tuple(kp[b])], fill=1, width=width)
    d.polygon([tuple(kp[5]), tuple(kp[6]), tuple(kp[12]), tuple(kp[11])], fill=1)  # torso
    hx, hy = kp[0]
    d.ellipse([hx - 0.85 * u, hy - 0.9 * u, hx + 0.85 * u, hy + 0.75 * u], fill=1)
    return np.asarray(img, dtype=bool), kp


def _color(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    while True:
        c = rng.integers(0, 256, 3)
        if np.abs(c.astype(int) - bg.reshape(-1, 3).mean(0)).sum() > 150:
            return c


def make_image(rng: np.random.Generator, size: int = 128, max_objects: int = 4, person_prob: float = 0.5):
    """One synthetic image: (HxWx3 uint8, list of objects {category_id, mask, keypoints|None})."""
    pix = _background(rng, size)
    objs: list[dict[str, Any]] = []
    n = int(rng.integers(1, max_objects + 1))
    for k in range(n):
        if k == 0 and rng.random() < person_prob:
            m, kp = _person(rng, size)
            objs.append({"category_id": 1, "mask": m, "kp": kp})
        else:
            name = ["disc", "triangle", "square"][int(rng.integers(0, 3))]
            cid = {"disc": 3, "triangle": 5, "square": 9}[name]
            objs.append({"category_id": cid, "mask": _shape_mask(name, rng, size), "kp": None})
    for o in objs:
        pix[o["mask"]] = _color(rng, pix)
    # later objects occlude earlier ones
    out = []
    for i, o in enumerate(objs):
        covered = np.zeros_like(o["mask"])
        for later in objs[i + 1:]:
            covered |= later["mask"]
        visible = o["mask"] & ~covered
        if visible.sum() < 20:
            continue
        kps = None
        if o["kp"] is not None:
            kps = []
            for x, y in o["kp"]:
                xi, yi = int(min(max(x, 0), size - 1)), int(min(max(y, 0), size - 1))
                inside = 0 <= x < size and 0 <= y < size
                v = 0 if not inside else (1 if covered[yi, xi] else 2)
                kps += [round(float(x), 2), round(float(y), 2), v] if v else [0, 0, 0]
        out.append({"category_id": o["category_id"], "mask": visible, "keypoints": kps})
    return pix, out


def make_coco(n_images: int, *, size: int = 128, seed: int = 0, first_image_id: int = 1,
              first_ann_id: int = 1, prefix: str = "synth", max_objects: int = 4
              ) -> tuple[list[tuple[str, np.ndarray]], dict]:
    """``n_images`` synthetic images (up to ``max_objects`` objects each) and their COCO dataset (masks as
    compressed RLE)."""
    rng = np.random.default_rng(seed)
    files, images, anns = [], [], []
    aid = first_ann_id
    for k in range(n_images):
        iid = first_image_id + k
        pix, objs = make_image(rng, size, max_objects=max_objects)
        name = f"{prefix}_{iid:06d}.png"
        files.append((name, pix))
        images.append({"id": iid, "file_name": name, "width": size, "height": size})
        inst = Instances(size, size)  # exact labels: RLE, tight box, pixel area, num_keypoints derived there
        for o in objs:
            inst.add(o["category_id"], [0, 0, 0, 0], mask=o["mask"], keypoints=o["keypoints"], ann_id=aid)
            aid += 1
        anns += inst.to_coco(iid)
    return files, {"images": images, "annotations": anns, "categories": json.loads(json.dumps(CATEGORIES))}


def write_coco(out_dir: str | Path, n_images: int, **kw) -> Path:
    """Write images and ``annotations.json`` into ``out_dir``; returns the JSON's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, coco = make_coco(n_images, **kw)
    for name, pix in files:
        Image.fromarray(pix).save(out_dir / name)
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


SHAPE_CATEGORIES = [
    {"id": 1, "name": "ellipse", "supercategory": "shape"},
    {"id": 2, "name": "rectangle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "ring", "supercategory": "shape"},
]


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A background of two colours blended along a random direction, with fine noise."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    w = ((np.cos(t) * xx + np.sin(t) * yy) - min(0, np.cos(t)) - min(0, np.sin(t))) / (abs(np.cos(t)) + abs(np.sin(t)))
    pix = a * (1 - w[..., None]) + b * w[..., None] + rng.normal(0, 8, (size, size, 3))
    return np.clip(pix, 0, 255).astype(np.uint8)


def _simple_shape(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.08, 0.3) * size
    cx, cy = rng.uniform(0.1 * size, 0.9 * size, 2)
    if kind == "ellipse":
        ry = r * rng.uniform(0.45, 1.0)
        d.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=1)
    elif kind == "rectangle":
        w, h = r, r * rng.uniform(0.4, 1.0)
        a = rng.uniform(0, math.pi)
        c, s = math.cos(a), math.sin(a)
        d.polygon([(cx + c * x - s * y, cy + s * x + c * y) for x, y in ((-w, -h), (w, -h), (w, h), (-w, h))], fill=1)
    elif kind == "triangle":
        a = rng.uniform(0, 2 * math.pi)
        d.polygon([(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
                   for k in range(3)], fill=1)
    else:  # ring: a disc with a hole
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        q = r * rng.uniform(0.35, 0.6)
        d.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    return np.asarray(img, dtype=bool)


def _add_image(files: list, images: list, anns: list, name: str, iid: int, pix: np.ndarray, inst: Instances) -> None:
    files.append((name, pix))
    images.append({"id": iid, "file_name": name, "width": pix.shape[1], "height": pix.shape[0]})
    anns += inst.to_coco(iid)


def make_shapes_coco(n_images: int, *, size: int = 128, seed: int = 0, max_objects: int = 5,
                     prefix: str = "shape") -> tuple[list[tuple[str, np.ndarray]], dict]:
    """Another synthetic dataset, unlike the demo's: four shape classes (a ring has a hole) of varied size
    and aspect on colour gradients, up to ``max_objects`` per image, later ones occluding earlier ones
    (an object left with under 20 visible pixels is dropped). Exact masks, no keypoints."""
    rng = np.random.default_rng(seed)
    files, images, anns = [], [], []
    aid = 1
    for k in range(n_images):
        iid = k + 1
        pix = _gradient(rng, size)
        objs = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            cat = SHAPE_CATEGORIES[int(rng.integers(0, len(SHAPE_CATEGORIES)))]
            m = _simple_shape(cat["name"], rng, size)
            pix[m] = _color(rng, pix)
            objs.append((cat["id"], m))
        inst = Instances(size, size)
        for i, (cid, m) in enumerate(objs):
            visible = m.copy()
            for _, later in objs[i + 1:]:
                visible &= ~later
            if visible.sum() >= 20:
                inst.add(cid, [0, 0, 0, 0], mask=visible, ann_id=aid)
                aid += 1
        _add_image(files, images, anns, f"{prefix}_{iid:06d}.png", iid, pix, inst)
    return files, {"images": images, "annotations": anns, "categories": json.loads(json.dumps(SHAPE_CATEGORIES))}


# --- the loop benchmark's data (bench/loop.py) -----------------------------------------------------------

KITE_KEYPOINTS = ["tip", "left", "right", "tail"]
LOOP_CATEGORIES = [
    {"id": 1, "name": "kite", "supercategory": "kite", "keypoints": KITE_KEYPOINTS,
     "skeleton": [[1, 2], [1, 3], [2, 4], [3, 4]]},
    {"id": 2, "name": "disc", "supercategory": "shape"},
    {"id": 4, "name": "box", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
]


def _loop_object(rng: np.random.Generator, size: int, centre: tuple[float, float] | None
                 ) -> tuple[int, np.ndarray, np.ndarray | None]:
    """One object of LOOP_CATEGORIES: (category id, full mask, kite keypoints (4, 2) or None)."""
    r = size * float(np.exp(rng.uniform(np.log(0.07), np.log(0.26))))  # small objects as often as large ones
    cx, cy = centre if centre is not None else tuple(rng.uniform(0.12 * size, 0.88 * size, 2))
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    kind = int(rng.integers(0, 4))
    kp = None
    if kind == 0:  # kite: upright within 25 degrees, its four corners are its keypoints
        a = rng.uniform(-0.44, 0.44)
        w = r * rng.uniform(0.5, 0.8)
        local = [(0.0, -r), (-w, -0.25 * r), (w, -0.25 * r), (0.0, 1.1 * r)]
        c, s_ = math.cos(a), math.sin(a)
        kp = np.array([(cx + c * x - s_ * y, cy + s_ * x + c * y) for x, y in local])
        d.polygon([tuple(kp[0]), tuple(kp[1]), tuple(kp[3]), tuple(kp[2])], fill=1)
    elif kind == 1:
        ry = r * rng.uniform(0.6, 1.0)
        d.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=1)
    elif kind == 2:
        w, h, a = r, r * rng.uniform(0.45, 1.0), rng.uniform(0, math.pi)
        c, s_ = math.cos(a), math.sin(a)
        d.polygon([(cx + c * x - s_ * y, cy + s_ * x + c * y) for x, y in ((-w, -h), (w, -h), (w, h), (-w, h))],
                  fill=1)
    else:
        a = rng.uniform(0, 2 * math.pi)
        d.polygon([(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
                   for k in range(3)], fill=1)
    return LOOP_CATEGORIES[kind]["id"], np.asarray(img, dtype=bool), kp


def make_loop_coco(n_images: int, *, size: int = 128, seed: int = 0, max_objects: int = 4, first_image_id: int = 1,
                   prefix: str = "loop") -> tuple[list[tuple[str, np.ndarray]], dict]:
    """The loop benchmark's images: four categories (a kite with four keypoints, disc, box, triangle; ids
    1, 2, 4, 7) from tiny to a quarter of the image, on noisy colour gradients. About a third of the objects
    are placed against an earlier one, so objects touch and occlude; later objects cover earlier ones, and an
    object left with under 40% of itself (or under 30 pixels) visible is dropped, as a labeler would not
    label it. A covered keypoint is marked occluded (v=1), one outside the image not labeled (v=0)."""
    rng = np.random.default_rng(seed)
    files, images, anns = [], [], []
    aid = 1
    for k in range(n_images):
        iid = first_image_id + k
        pix = _gradient(rng, size)
        objs: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        for j in range(int(rng.integers(1, max_objects + 1))):
            centre = None
            if j and rng.random() < 0.35:  # against an earlier object: touching or overlapping it
                ys, xs = np.nonzero(objs[int(rng.integers(0, len(objs)))][1])
                if len(xs):
                    p = int(rng.integers(0, len(xs)))
                    centre = (float(xs[p]), float(ys[p]))
            objs.append(_loop_object(rng, size, centre))
            pix[objs[-1][1]] = _color(rng, pix)
        inst = Instances(size, size)
        for i, (cid, m, kp) in enumerate(objs):
            covered = np.zeros_like(m)
            for _, later, _ in objs[i + 1:]:
                covered |= later
            visible = m & ~covered
            if visible.sum() < max(30, 0.4 * m.sum()):
                continue
            kps = None
            if kp is not None:
                kps = []
                for x, y in kp:
                    inside = 0 <= x < size and 0 <= y < size
                    v = 0 if not inside else (1 if covered[int(y), int(x)] else 2)
                    kps += [round(float(x), 2), round(float(y), 2), v] if v else [0, 0, 0]
            inst.add(cid, [0, 0, 0, 0], mask=visible, keypoints=kps, ann_id=aid)
            aid += 1
        _add_image(files, images, anns, f"{prefix}_{iid:06d}.png", iid, pix, inst)
    return files, {"images": images, "annotations": anns, "categories": json.loads(json.dumps(LOOP_CATEGORIES))}


# --- photo scale (issue 19): one large photo with many instances, for tests and bench/memory.py ----------------
def photo_instances(width: int, height: int, n: int, category_id: int, *, seed: int = 0,
                    radius: tuple[int, int] = (80, 500)) -> Instances:
    """``n`` elliptical objects spread over a ``width`` x ``height`` photo, as model proposals (scores
    spread over 0.3..0.95); each mask is made as a crop of its box, never as a full frame."""
    rng = np.random.default_rng(seed)
    inst = Instances(height, width)
    for k in range(n):
        rx, ry = (int(v) for v in rng.integers(radius[0], radius[1], 2))
        rx, ry = min(rx, max(1, width // 2 - 1)), min(ry, max(1, height // 2 - 1))
        cx, cy = int(rng.integers(rx, max(rx + 1, width - rx))), int(rng.integers(ry, max(ry + 1, height - ry)))
        yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
        blob = (xx / max(rx, 1)) ** 2 + (yy / max(ry, 1)) ** 2 <= 1.0
        i = inst.add(category_id, [cx - rx, cy - ry, 2 * rx + 1, 2 * ry + 1], score=0.3 + 0.65 * k / max(1, n - 1),
                     source="model", state="proposed")
        inst.set_crop(i, crops.Crop(cx - rx, cy - ry, blob))
    inst.segmentations  # encoded to RLE now  # noqa: B018
    inst.forget_decoded()
    return inst


def write_photo(path: str | Path, width: int = 6000, height: int = 4000, *, seed: int = 0, quality: int = 90) -> Path:
    """A photo-sized JPEG (smooth colour fields, like a photo compresses) at ``path``."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(2, height // 100), max(2, width // 100), 3), dtype=np.uint8))
    big = small.resize((width, height), Image.BILINEAR)
    path = Path(path)
    big.save(path, format="JPEG", quality=quality)
    return path
