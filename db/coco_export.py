"""COCO export, following the fidelity rules: ids as stored, xywh boxes, RLE counts as str, 1-based
skeletons, keypoints untruncated, sorted ids, so two exports of the same data are byte-identical."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from db import crops
from db import masks
from db.errors import UserError
from db.instances import Instances
from db.media import FileNames, clash_text, file_name_problem
from db.schema import Annotation, Category, DatasetMeta, Image
from db.store import Store

SegFormat = Literal["asis", "rle", "polygons"]
DEFAULT_INFO = {"description": "maskloop export", "version": "1.0"}


def build(store: Store, *, include_proposals: bool = False, seg_format: SegFormat = "asis",
          all_images: bool = False) -> dict[str, Any]:
    """The COCO dataset as a dict. ``asis`` keeps polygons as polygons and masks as RLE.

    Which images: in COCO an image without annotations is a negative example, so by default only images
    whose labels are done are written (a done image with no objects is a true negative); an image still
    new, proposed or in review would teach whoever trains on the file that its objects are background.
    ``include_proposals`` also writes the images its proposals are on; ``all_images`` writes every image."""
    states = ("accepted", "proposed") if include_proposals else ("accepted",)
    with store.session() as s:
        meta = {m.key: m.value for m in s.scalars(select(DatasetMeta))}
        cats = s.scalars(select(Category).order_by(Category.id)).all()
        q = select(Image.id, Image.file_name, Image.width, Image.height, Image.extra).order_by(Image.id)
        if not all_images:
            with_props = (select(Annotation.image_id).where(Annotation.review_state == "proposed")
                          if include_proposals else None)
            q = q.where(Image.status == "done" if with_props is None
                        else (Image.status == "done") | Image.id.in_(with_props))
        imgs = s.execute(q).all()
        anns = s.execute(  # plain rows with the columns Instances.from_rows reads (no ORM identity map)
            select(Annotation.id, Annotation.image_id, Annotation.category_id, Annotation.segmentation,
                   Annotation.area, Annotation.bbox, Annotation.iscrowd, Annotation.keypoints,
                   Annotation.num_keypoints, Annotation.score, Annotation.source, Annotation.review_state,
                   Annotation.extra)
            .where(Annotation.review_state.in_(states)).order_by(Annotation.id)).all()
    sizes = {r.id: (r.height, r.width) for r in imgs}
    anns = [a for a in anns if a.image_id in sizes]  # the annotations of the images written
    out_images = []
    for r in imgs:
        d = {"id": r.id, "file_name": r.file_name, "width": r.width, "height": r.height}
        if r.extra:
            d.update({k: r.extra[k] for k in sorted(r.extra) if k not in d})
        out_images.append(d)
    out_cats = []
    for c in cats:
        d = {"id": c.id, "name": c.name, "supercategory": c.supercategory}
        if c.keypoints is not None:
            d["keypoints"] = list(c.keypoints)
            d["skeleton"] = [list(p) for p in (c.skeleton or [])]
        out_cats.append(d)
    by_image: dict[int, list] = {}
    for a in anns:
        by_image.setdefault(a.image_id, []).append(a)
    out_anns = []
    for image_id, rows in by_image.items():
        inst = Instances.from_rows(rows, *sizes[image_id])
        for i in range(len(inst)):
            try:
                out_anns.append(inst.coco(i, image_id, with_score=include_proposals,
                                          segmentation=_segmentation(inst, i, seg_format)))
            except masks.MaskError as e:  # a row stored before import checked segmentations
                raise UserError(f"annotation {inst.ann_ids[i]} (image {image_id}) cannot be exported: its "
                                f"segmentation is invalid ({e}); fix or delete it in the Label tab") from None
    out_anns.sort(key=lambda d: d["id"])
    return {
        "info": meta.get("info", DEFAULT_INFO),
        "licenses": meta.get("licenses", []),
        "images": out_images,
        "annotations": out_anns,
        "categories": out_cats,
    }


def _segmentation(inst: Instances, i: int, seg_format: SegFormat):
    """Instance ``i``'s segmentation in the asked format: ``asis`` keeps polygons as polygons and masks as
    RLE; crowd regions stay RLE under ``polygons``, as in COCO."""
    seg = inst.segmentations[i]
    if not seg:
        return []
    if isinstance(seg, dict):
        masks.check(seg, inst.height, inst.width)  # never write an RLE that COCO readers would choke on
    if seg_format == "rle" and isinstance(seg, list):
        return inst.rle(i)
    if seg_format == "polygons" and isinstance(seg, dict) and not inst.iscrowd[i]:
        return crops.crop_to_polygons(inst.crop(i))  # traced on the mask's crop, not a full frame
    return seg


def dumps(dataset: dict[str, Any]) -> bytes:
    return json.dumps(dataset, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def export(store: Store, out: str | Path, *, images_dir: str | Path | None = None,
           include_proposals: bool = False, seg_format: SegFormat = "asis", all_images: bool = False) -> dict[str, int]:
    """Write OUT.json (and copy images to ``images_dir``), or OUT.zip with annotations.json + images/; the
    images as ``build`` chooses them. Every image's name is checked before anything is written
    (``_name_problems``): an export either writes everything or nothing. Under ``images_dir`` no symbolic
    link is ever followed (a link in the way is refused by name) and an existing file is replaced, never
    written through."""
    out = Path(out)
    ds = build(store, include_proposals=include_proposals, seg_format=seg_format, all_images=all_images)
    blob = dumps(ds)
    written = {d["id"] for d in ds["images"]}
    with store.session() as s:
        files = [f for f in s.execute(select(Image.id, Image.file_name, Image.media_path).order_by(Image.id))
                 if f.id in written]
    if out.suffix.lower() == ".zip" or images_dir is not None:
        problems = _name_problems(files, Path(images_dir) if images_dir is not None and out.suffix.lower() != ".zip"
                                  else None)
        if problems:
            shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
            raise UserError(f"{len(problems)} image(s) cannot be written, so nothing was written (the annotations "
                            "alone export without --images-dir):\n  " + "\n  ".join(shown))
    if out.suffix.lower() == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".part")
        os.close(fd)
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr(zipfile.ZipInfo("annotations.json", date_time=(1980, 1, 1, 0, 0, 0)), blob,
                       compress_type=zipfile.ZIP_DEFLATED)
            for _, name, media in files:
                info = zipfile.ZipInfo(f"images/{name}", date_time=(1980, 1, 1, 0, 0, 0))
                z.writestr(info, store.media_file(media).read_bytes(), compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, out)
    else:
        _atomic_write(out, blob)
        if images_dir is not None:
            root = Path(images_dir)
            root.mkdir(parents=True, exist_ok=True)
            for image_id, name, media in files:
                _write_under(root, name, store.media_file(media))
    return {"images": len(ds["images"]), "annotations": len(ds["annotations"]),
            "categories": len(ds["categories"]), "bytes": len(blob)}


def _name_problems(files, root: Path | None) -> list[str]:
    """Why each image cannot be written under its file name, by image id: a name against the rule
    (db.media.file_name_problem: stored by an older version), two names that would be a file and a folder
    at once, and, writing into the folder ``root``, a symbolic link or a file in the way on disk."""
    problems = []
    names = FileNames(fold=False)  # (what clashes on this machine; the import's rule keeps case apart too)
    for image_id, name, _ in files:
        why = file_name_problem(name)
        if why is None and names.clash(name, image_id):
            why = clash_text(name, names.clash(name, image_id))
        if why is None and root is not None:
            why = _in_the_way(root, name)
        if why is not None:
            problems.append(f"image {image_id}: file_name {name[:200]!r} {why}")
        else:
            names.add(name, image_id)
    return problems


def _in_the_way(root: Path, name: str) -> str | None:
    """What on disk under ``root`` keeps ``name`` from being written there without following a link: a
    symbolic link on its path (inside ``root``), a file where a folder is needed, a folder where the file
    goes. None when nothing does."""
    parts = name.split("/")
    here = root
    for k, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"cannot be looked at in {root}: {e.strerror or e}"
        if stat.S_ISLNK(st.st_mode):
            return f"meets the symbolic link {here} (an export never writes through links: move it away)"
        if k < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return f"needs a folder where {here} is a file"
        if k == len(parts) - 1 and not stat.S_ISREG(st.st_mode):
            return f"would replace {here}, which is not a plain file"
    return None


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _write_under(root: Path, name: str, src: Path) -> None:
    """Copy ``src`` to ``root``/``name`` following no link below ``root``: each folder is opened relative to
    the one above with O_NOFOLLOW (a link put there since the check is refused, not followed), and the file
    is written as a new temporary file in its folder and renamed over the name (a link or hard link there is
    replaced, never written through)."""
    parts = name.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nxt = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            except OSError as e:  # ELOOP or ENOTDIR: a link or a file came in the way after the check
                raise UserError(f"{root / name}: {part!r} is not a folder here ({e.strerror}); the export stopped "
                                "without writing through it") from None
            os.close(fd)
            fd = nxt
        tmp = f".maskloop-{secrets.token_hex(8)}.part"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as f, open(src, "rb") as r:
                shutil.copyfileobj(r, f, 1 << 20)
            os.replace(tmp, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
