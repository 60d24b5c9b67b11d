"""The store overview: counts, a gallery of images with their masks drawn, uploads and exports.

Plain functions (no gradio): the UI callbacks and the tests call these.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image as PILImage

from annotator.render import CannotDraw, check_drawable, draw_instances
from db import annotations, claims, crops, formats
from db import categories as cat_db
from db.coco_import import CocoRejected, import_coco
from db.coco_import import summary as coco_summary
from db.errors import UserError
from db.ingest import Unpacker, ingest
from db.instances import Instances
from db.media import load_rgb
from db.schema import Annotation
from db.stats import stats
from db.store import Store


def counts_tables(store: Store) -> tuple[list[list], list[list]]:
    st = stats(store)
    by_status = [[k, v] for k, v in st.images_by_status.items()]
    by_cat = [[name, c["accepted"], c["proposed"], c["rejected"]] for name, c in st.annotations_by_category.items()]
    return by_status, by_cat


PROBLEM_HEADERS = ["id", "file name", "why the model could not use it", "when (UTC)"]


def problem_table(store: Store, limit: int = 200) -> tuple[str, list[list]]:
    """The images with a recorded problem (db.annotations.record_problems): a line with their count, and a row
    per image (id, file name, reason, when), the first ``limit`` by id."""
    n, shown = annotations.images_with_problems(store, limit)
    if not n:
        return "No image with a problem: the model could use every image it tried.", []
    line = (f"**{n} image(s) the model could not use**: proposals, assist and fine-tuning skip them (the rest go "
            "on). The reason is cleared when one is used again (Propose again, a new model version).")
    if n > len(shown):
        line += f" The first {len(shown)} by id:"
    rows = [[p.id, p.file_name, p.problem, f"{p.at:%Y-%m-%d %H:%M}" if p.at else ""] for p in shown]
    return line, rows


GALLERY_PAGE_SIZE = 24


@dataclasses.dataclass
class GalleryPage:
    """One page of the store's gallery: (picture, caption) per image, lowest ids first."""

    items: list[tuple[np.ndarray, str]]
    page: int  # 1-based, clamped to the pages there are
    pages: int
    ids: list[int] = dataclasses.field(default_factory=list)  # the image id of each item

    @property
    def label(self) -> str:
        return f"page {self.page} of {self.pages}"


def gallery(store: Store, page: int = 1, page_size: int = GALLERY_PAGE_SIZE, thumb: int = 256) -> GalleryPage:
    """Page ``page`` of the images with their accepted and proposed annotations drawn. Only that page's
    images and their annotations are read. An annotation or image that cannot be drawn is named in its
    caption; the rest of the page is shown."""
    got = annotations.page_of_images(store, page, page_size)
    cats = {c.id: c for c in cat_db.all_categories(store)}
    items = [_thumbnail(store, im, got.annotations[im.id], cats, thumb) for im in got.images]
    return GalleryPage(items, got.page, got.pages, [im.id for im in got.images])


def _thumbnail(store: Store, im: annotations.ImageRecord, anns: list[Annotation], cats: dict,
               thumb: int) -> tuple[np.ndarray, str]:
    caption = f"#{im.id} {im.file_name} · {im.status} · {len(anns)} inst."
    caption += f" · {im.problem}" if im.problem else ""  # why the model could not use it
    try:
        pix = load_rgb(store.media_file(im.media_path), at_least=thumb)  # a photo is decoded at reduced size
    except Exception as e:  # a missing or unreadable media file names its image; the page goes on
        return np.full((thumb // 2, thumb // 2, 3), 128, np.uint8), f"{caption} · image cannot be read: {e}"
    scale = min(1.0, thumb / max(im.width, im.height, 1))
    if scale < 1 or pix.size != (im.width, im.height):
        pix = pix.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), PILImage.BILINEAR)
    good, kept, problems = [], [], []
    decoded = crops.decode_crops([a.segmentation for a in anns], im.height, im.width)  # all at once
    for a, crop in zip(anns, decoded):
        try:
            check_drawable(a, im.height, im.width, crop)
            good.append(a)
            kept.append(crop)
        except CannotDraw as e:
            problems.append(str(e))
    inst = Instances.from_rows(good, im.height, im.width)
    inst._crops[:] = kept

    def name(i: int) -> str:
        cat = cats.get(inst.category_ids[i])
        return cat.name if cat else str(inst.category_ids[i])

    def skeleton(i: int):
        cat = cats.get(inst.category_ids[i])
        return (cat.skeleton or []) if cat else []

    picture = draw_instances(np.asarray(pix), inst, scale, range(len(inst)), tag=name, skeleton=skeleton)
    return np.asarray(picture), " · ".join([caption] + problems)


def upload_images(store: Store, paths: Sequence[str], user: str = "") -> str:
    """Import uploaded files or zips; returns a report naming every skipped file with its reason."""
    if not paths:
        return "Choose image files or a zip archive first."
    # uploads sit in temporary folders: name them as the user knows them
    report = ingest(store, [Path(p) for p in paths], shown=lambda p: p.name)
    return "\n".join(report.lines())


def upload_coco(store: Store, json_path: str | None, images: Sequence[str], as_proposals: bool,
                needs_review: bool = False, user: str = "import") -> str:
    """Import a COCO file whose images come as uploaded files or zips (unpacked into a temp folder under the
    same size and zip-bomb limits as image imports, and at most ``Settings.max_unpacked_bytes`` for all the
    zips together: db.ingest.Unpacker); ``needs_review``: its labels wait in the review queue as saved by
    ``user``."""
    if not json_path:
        return "Choose a COCO JSON file first."
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        unpacker = Unpacker(root, store.settings)  # (one limit for all the archives together)
        skipped = unpacker.skipped
        for p in images or []:
            p = Path(p)
            if p.suffix.lower() == ".zip":
                try:
                    unpacker.add(p)
                except UserError as e:
                    return str(e)
            else:
                unpacker.copy(p)
        try:
            r = import_coco(store, json_path, root, as_proposals=as_proposals, needs_review=needs_review,
                            user=user or "import")
        except CocoRejected as e:
            return "\n".join([str(e)] + [f"skipped: {n}: {why}" for n, why in skipped])
    return "\n".join([coco_summary(r)] + [f"skipped: {n}: {why}" for n, why in skipped])


def export(store: Store, with_images: bool, include_proposals: bool, out_dir: str | Path,
                      all_images: bool = False, fmt: str = "coco") -> tuple[str, list[str]]:
    """Write the export into ``out_dir`` as ``fmt`` (a name of ``db.formats.FORMATS``: COCO as JSON or as a zip
    with its images, YOLO a zip with its images whatever ``with_images`` says); returns the file's path for
    download and the summary's notes (what was left out)."""
    f = formats.named(fmt)
    path = Path(out_dir) / f.download(with_images)
    r = f.export(store, path, include_proposals=include_proposals, all_images=all_images)
    return str(path), r["notes"]


class ExportFolder:
    """The UI's latest export, in its own temporary folder under ``parent`` (the system's temp folder by
    default). Preparing an export deletes the previous one's folder; ``close`` (at app shutdown) deletes the
    last. Gradio copies the returned file into its cache, whose cleanup ``gr.Blocks(delete_cache=...)`` owns.
    ``notes``: the latest export's summary lines beyond its counts."""

    def __init__(self, parent: str | Path | None = None):
        self.parent = parent
        self.current: Path | None = None
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def prepare(self, store: Store, with_images: bool, include_proposals: bool, all_images: bool = False,
                fmt: str = "coco") -> str:
        with self._lock:
            self._remove()
            self.current = Path(tempfile.mkdtemp(prefix="maskloop-export-", dir=self.parent))
            path, self.notes = export(store, with_images, include_proposals, self.current, all_images, fmt)
            return path

    def close(self) -> None:
        with self._lock:
            self._remove()

    def _remove(self) -> None:
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True)
            self.current = None


def categories_rows(store: Store) -> list[list]:
    used = annotations.annotations_per_category(store)
    return [[c.id, c.name, c.supercategory, ", ".join(c.keypoints or []),
             ", ".join(f"{a}-{b}" for a, b in (c.skeleton or [])), used.get(c.id, 0)]
            for c in cat_db.all_categories(store)]


HOLDS_HEADERS = ["user", "open now", "images open", "assigned", "assigned and done"]


def holds_rows(store: Store) -> list[list]:
    """Who holds what (db.claims.who_holds_what), a row per person."""
    return [[h.user, h.claimed, ", ".join(map(str, h.claimed_ids)) + (" ..." if h.claimed > len(h.claimed_ids) else ""),
             h.assigned, h.assigned_done] for h in claims.who_holds_what(store)]


def assign(store: Store, user, folder, category, status, ids, by: str) -> str:
    """Assign the images a filter picks to ``user`` (the Dataset tab's form); what to show."""
    try:
        user = (user or "").strip()
        if not user:
            return "Assign to whom? Enter a user name."
        if not any((v or "").strip() for v in (folder, category, status, ids)):
            return "Which images? Give a folder, a category, a status or image ids."
        n = claims.assign(store, user, claims.matching(store, folder=folder, category=category, status=status,
                                                       ids=ids), by=by)
    except UserError as e:
        return str(e)
    return f"assigned {n} image(s) to {user}: only they are handed them" if n else "no image matches"


def unassign(store: Store, user, folder, category, status, ids) -> str:
    """Take back the assignments of the images a filter picks (of ``user`` only, when given; with no filter,
    all of the user's)."""
    try:
        user = (user or "").strip() or None
        blank = not any((v or "").strip() for v in (folder, category, status, ids))
        if blank and user is None:
            return "Whose images? Enter a user name, or pick the images."
        n = claims.unassign(store, None if blank else claims.matching(store, folder=folder, category=category,
                                                                       status=status, ids=ids), user=user)
    except UserError as e:
        return str(e)
    return f"took back {n} assignment(s)"
