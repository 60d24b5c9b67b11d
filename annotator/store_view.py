"""The store overview: counts, a gallery of images with their masks drawn, uploads and exports.

Plain functions (no gradio): the UI callbacks and the tests call these.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from annotator.render import draw, shown_from_annotation
from db import coco_export
from db.coco_import import CocoRejected, import_coco
from db.ingest import ingest
from db.media import load_rgb
from db.schema import Annotation, Category, Image
from db.stats import stats
from db.store import Store


def counts_tables(store: Store) -> tuple[list[list], list[list]]:
    st = stats(store)
    by_status = [[k, v] for k, v in st.images_by_status.items()]
    by_cat = [[name, c["accepted"], c["proposed"], c["rejected"]] for name, c in st.annotations_by_category.items()]
    return by_status, by_cat


def gallery(store: Store, limit: int = 48, thumb: int = 256) -> list[tuple[np.ndarray, str]]:
    """Up to ``limit`` images (lowest ids first) with accepted and proposed annotations drawn."""
    with store.session() as s:
        cats = {c.id: c for c in s.scalars(select(Category))}
        imgs = s.scalars(select(Image).order_by(Image.id).limit(limit)
                         .options(selectinload(Image.annotations))).all()
        out = []
        for im in imgs:
            pix = np.asarray(load_rgb(store.media_file(im.media_path)))
            anns = [a for a in im.annotations if a.review_state != "rejected"]
            items = [shown_from_annotation(a, im.height, im.width, cats[a.category_id].name, cats[a.category_id])
                     for a in anns]
            picture = draw(pix, items)
            scale = thumb / max(im.width, im.height)
            if scale < 1:
                picture = np.asarray(PILImage.fromarray(picture).resize(
                    (max(1, int(im.width * scale)), max(1, int(im.height * scale))), PILImage.BILINEAR))
            out.append((picture, f"#{im.id} {im.file_name} · {im.status} · {len(anns)} inst."))
    return out


def upload_images(store: Store, paths: Sequence[str], user: str = "") -> str:
    """Import uploaded files or zips; returns a report naming every skipped file with its reason."""
    if not paths:
        return "Choose image files or a zip archive first."
    # uploads sit in temporary folders: name them as the user knows them
    report = ingest(store, [Path(p) for p in paths], shown=lambda p: p.name)
    return "\n".join(report.lines())


def upload_coco(store: Store, json_path: str | None, images: Sequence[str], as_proposals: bool) -> str:
    """Import a COCO file whose images come as uploaded files or zips (unpacked into a temp folder)."""
    if not json_path:
        return "Choose a COCO JSON file first."
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for p in images or []:
            p = Path(p)
            if p.suffix.lower() == ".zip":
                try:
                    with zipfile.ZipFile(p) as z:
                        for info in z.infolist():
                            target = (root / info.filename).resolve()
                            if info.is_dir() or not target.is_relative_to(root.resolve()):
                                continue
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_bytes(z.read(info))
                except zipfile.BadZipFile as e:
                    return f"{p.name}: not a readable zip archive: {e}"
            else:
                shutil.copyfile(p, root / p.name)
        try:
            r = import_coco(store, json_path, root, as_proposals=as_proposals)
        except CocoRejected as e:
            return str(e)
    return (f"imported {r['images']} image(s), {r['annotations']} annotation(s), "
            f"{r['categories']} categor(y/ies)")


def export_file(store: Store, with_images: bool, include_proposals: bool, out_dir: str | None = None) -> str:
    """Write the export into a fresh temp folder; returns the file's path for download."""
    d = Path(out_dir or tempfile.mkdtemp(prefix="maskloop-export-"))
    name = "coco_dataset.zip" if with_images else "coco_annotations.json"
    coco_export.export(store, d / name, include_proposals=include_proposals)
    return str(d / name)


def category_choices(store: Store) -> list[tuple[str, int]]:
    """Dropdown choices: ("name (id)", id), by id."""
    with store.session() as s:
        return [(f"{name} ({cid})", cid) for cid, name in s.execute(select(Category.id, Category.name)
                                                                     .order_by(Category.id))]


def categories_rows(store: Store) -> list[list]:
    with store.session() as s:
        used = dict(s.execute(select(Annotation.category_id, func.count()).group_by(Annotation.category_id)).all())
        return [[c.id, c.name, c.supercategory, ", ".join(c.keypoints or []),
                 ", ".join(f"{a}-{b}" for a, b in (c.skeleton or [])), used.get(c.id, 0)]
                for c in s.scalars(select(Category).order_by(Category.id))]
