"""COCO export, following the fidelity rules: ids as stored, xywh boxes, RLE counts as str, 1-based
skeletons, keypoints untruncated, sorted ids, so two exports of the same data are byte-identical.

Which images and annotations, and how the files are written (atomically, images under a folder or in a zip,
every name checked first), is ``db.export``'s: this module only turns each image's ``Instances`` into COCO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from db import crops
from db import export as out_files
from db import masks
from db.export import Rule
from db.instances import Instances
from db.store import Store

SegFormat = Literal["asis", "rle", "polygons"]
DEFAULT_INFO = {"description": "maskloop export", "version": "1.0"}
NAMED = 5  # annotations named in the summary for each reason a mask stayed RLE


class _Coco:
    """The COCO dataset being built, image by image; ``kept_rle``: (annotation id, why) of each mask that
    stayed RLE under ``polygons`` because its traced polygons do not give back its pixels."""

    def __init__(self, cats: list[out_files.CategoryRow], seg_format: SegFormat, with_score: bool):
        self.seg_format, self.with_score = seg_format, with_score
        self.slots = {c.id: len(c.keypoints) for c in cats if c.keypoints is not None}
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.kept_rle: list[tuple[Any, str]] = []

    def add(self, r: out_files.ImageRow, inst: Instances) -> None:
        d = {"id": r.id, "file_name": r.file_name, "width": r.width, "height": r.height}
        if r.extra:
            d.update({k: r.extra[k] for k in sorted(r.extra) if k not in d})
        self.images.append(d)
        for i in range(len(inst)):
            try:
                self.annotations.append(inst.coco(i, r.id, with_score=self.with_score,
                                                  segmentation=self._segmentation(inst, i),
                                                  keypoint_slots=self.slots.get(inst.category_ids[i])))
            except masks.MaskError as e:
                raise out_files.invalid(inst, i, r.id, e) from None

    def _segmentation(self, inst: Instances, i: int):
        """Instance ``i``'s segmentation in the asked format: ``asis`` keeps polygons as polygons and masks as
        RLE; under ``polygons`` crowd regions stay RLE, as in COCO, and so does every mask whose traced
        polygons do not rasterize (pycocotools) to its very pixels: holes, which COCO polygons cannot hold."""
        seg = inst.segmentations[i]
        if not seg:
            return []
        if isinstance(seg, dict):
            masks.check(seg, inst.height, inst.width)  # never write an RLE that COCO readers would choke on
        if self.seg_format == "rle" and isinstance(seg, list):
            return inst.rle(i)
        if self.seg_format == "polygons" and isinstance(seg, dict) and not inst.iscrowd[i]:
            crop = inst.crop(i)
            polygons = crops.crop_to_polygons(crop)  # traced on the mask's crop, not a full frame
            why = crops.polygons_differ(crop, polygons, inst.height, inst.width)  # checked on it too
            if why is None:
                return polygons
            self.kept_rle.append((inst.ann_ids[i], why))
        return seg

    def dataset(self, meta: dict[str, Any], cats: list[out_files.CategoryRow]) -> dict[str, Any]:
        out_cats = []
        for c in cats:
            d = {"id": c.id, "name": c.name, "supercategory": c.supercategory}
            if c.keypoints is not None:
                d["keypoints"] = list(c.keypoints)
                d["skeleton"] = [list(p) for p in (c.skeleton or [])]
            out_cats.append(d)
        self.annotations.sort(key=lambda d: d["id"])
        return {
            "info": meta.get("info", DEFAULT_INFO),
            "licenses": meta.get("licenses", []),
            "images": self.images,
            "annotations": self.annotations,
            "categories": out_cats,
        }

    def notes(self) -> list[str]:
        """What the summary says beyond the counts: the masks that stayed RLE, a few named per reason."""
        if not self.kept_rle:
            return []
        by_why: dict[str, list] = {}
        for ann_id, why in self.kept_rle:
            by_why.setdefault(why.split(":")[0], []).append((ann_id, why))
        lines = [f"{len(self.kept_rle)} mask(s) stayed RLE: their polygons would not give back their pixels"]
        for kind, got in sorted(by_why.items()):
            named = ", ".join(f"{a} ({w.split(': ', 1)[-1]})" for a, w in sorted(got, key=lambda t: t[0])[:NAMED])
            lines.append(f"  {kind}: {len(got)}, e.g. annotation {named}")
        return lines


def _build(store: Store, rule: Rule, seg_format: SegFormat) -> tuple[dict[str, Any], _Coco, list]:
    cats = out_files.categories(store)
    coco = _Coco(cats, seg_format, with_score=rule.include_proposals)
    rows = out_files.images(store, rule)
    for r, inst in out_files.instances(store, rule, rows):
        coco.add(r, inst)
    return coco.dataset(out_files.meta(store), cats), coco, rows


def build(store: Store, *, include_proposals: bool = False, seg_format: SegFormat = "asis",
          all_images: bool = False) -> dict[str, Any]:
    """The COCO dataset as a dict, of the images and annotations ``db.export.Rule`` picks (by default the
    images whose labels are done). ``asis`` keeps polygons as polygons and masks as RLE; ``rle`` writes every
    segmentation as RLE; ``polygons`` traces masks as polygons where those give back the mask exactly. Every
    annotation of a category with keypoints has ``keypoints`` and ``num_keypoints`` (K zeros and 0 where none
    were placed), so pycocotools' keypoint evaluation reads each."""
    return _build(store, Rule(include_proposals, all_images), seg_format)[0]


def dumps(dataset: dict[str, Any]) -> bytes:
    return json.dumps(dataset, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def export(store: Store, out: str | Path, *, images_dir: str | Path | None = None,
           include_proposals: bool = False, seg_format: SegFormat = "asis", all_images: bool = False) -> dict[str, Any]:
    """Write OUT.json (and copy images to ``images_dir``), or OUT.zip with annotations.json + images/; the
    images as ``build`` chooses them. Every image's name is checked before anything is written
    (``db.export.name_problems``): an export either writes everything or nothing. Under ``images_dir`` no
    symbolic link is ever followed (a link in the way is refused by name) and an existing file is replaced,
    never written through. Returns the counts, and ``notes``: lines for the summary (masks that stayed RLE)."""
    out = Path(out)
    zipped = out.suffix.lower() == ".zip"
    ds, coco, rows = _build(store, Rule(include_proposals, all_images), seg_format)
    blob = dumps(ds)
    files = [(r.id, r.file_name, r.media_path) for r in rows]
    if zipped or images_dir is not None:
        out_files.refuse(out_files.name_problems(files, Path(images_dir) if images_dir is not None and not zipped
                                                 else None),
                         " (the annotations alone export without --images-dir)")
    if zipped:
        with out_files.ZipOut(out) as z:
            z.write("annotations.json", blob)
            for _, name, media in files:
                z.copy(f"images/{name}", store.media_file(media))
    else:
        out_files.atomic_write(out, blob)
        if images_dir is not None:
            root = Path(images_dir)
            root.mkdir(parents=True, exist_ok=True)
            for _, name, media in files:
                out_files.write_under(root, name, store.media_file(media))
    return {"images": len(ds["images"]), "annotations": len(ds["annotations"]),
            "categories": len(ds["categories"]), "bytes": len(blob), "stayed_rle": len(coco.kept_rle),
            "notes": coco.notes()}
