"""What an export holds and how its files are written, whatever the format (``db.coco_export``,
``db.yolo_export``): a format only turns each image's ``Instances`` into its own files.

The rule (``Rule``, ``images``, ``instances``): in COCO and YOLO alike an image without annotations is a
negative example, so by default only images whose labels are done are exported (a done image with no objects
is a true negative); an image still new, proposed or in review would teach whoever trains on the export that
its objects are background. ``include_proposals`` also exports the unreviewed proposals and the images they
are on; ``all_images`` exports every image. Annotations are read a batch of images at a time (``instances``),
so an export of tens of thousands of images holds one batch's rows, never the whole store's.

The writer: ``atomic_write`` (a temporary file renamed over the name), ``ZipOut`` (a zip written under a
temporary name and renamed into place, with fixed dates, so two exports of the same data are byte-identical),
``FolderOut`` (a new folder filled under a temporary name and renamed into place: never an existing non-empty
one), ``name_problems`` (every name checked before anything is written: an export writes everything or
nothing) and ``write_under`` (a file written below a folder following no symbolic link).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import select

from db.errors import UserError
from db.instances import Instances
from db.media import FileNames, clash_text, file_name_problem
from db.schema import Annotation, Category, DatasetMeta, Image
from db.store import Store

IMAGES_PER_BATCH = 256  # images whose annotations are read in one query


@dataclasses.dataclass(frozen=True)
class Rule:
    """Which images and annotations an export holds (see the module's docstring)."""

    include_proposals: bool = False
    all_images: bool = False

    @property
    def states(self) -> tuple[str, ...]:
        return ("accepted", "proposed") if self.include_proposals else ("accepted",)


@dataclasses.dataclass(frozen=True)
class CategoryRow:
    id: int
    name: str
    supercategory: str
    keypoints: list[str] | None
    skeleton: list[list[int]] | None


@dataclasses.dataclass(frozen=True)
class ImageRow:
    id: int
    file_name: str
    width: int
    height: int
    extra: dict[str, Any] | None
    media_path: str


def meta(store: Store) -> dict[str, Any]:
    """The dataset's COCO ``info`` and ``licenses`` (and any other key kept from an import)."""
    with store.session() as s:
        return {m.key: m.value for m in s.scalars(select(DatasetMeta))}


def categories(store: Store) -> list[CategoryRow]:
    """Every category, by id."""
    with store.session() as s:
        return [CategoryRow(c.id, c.name, c.supercategory, None if c.keypoints is None else list(c.keypoints),
                            None if c.keypoints is None else [list(p) for p in (c.skeleton or [])])
                for c in s.scalars(select(Category).order_by(Category.id))]


def images(store: Store, rule: Rule) -> list[ImageRow]:
    """The images the rule exports, by id."""
    q = select(Image.id, Image.file_name, Image.width, Image.height, Image.extra, Image.media_path).order_by(Image.id)
    if not rule.all_images:
        done = Image.status == "done"
        if rule.include_proposals:
            done = done | Image.id.in_(select(Annotation.image_id).where(Annotation.review_state == "proposed"))
        q = q.where(done)
    with store.session() as s:
        return [ImageRow(*r) for r in s.execute(q)]


def instances(store: Store, rule: Rule, rows: list[ImageRow]) -> Iterator[tuple[ImageRow, Instances]]:
    """Each image of ``rows`` (in their order) with its annotations that the rule exports, by id, as stored
    (an image without any: an empty ``Instances``). Reads ``IMAGES_PER_BATCH`` images' annotations at a time."""
    for start in range(0, len(rows), IMAGES_PER_BATCH):
        batch = rows[start:start + IMAGES_PER_BATCH]
        with store.session() as s:
            anns = s.execute(  # plain rows with the columns Instances.from_rows reads (no ORM identity map)
                select(Annotation.id, Annotation.image_id, Annotation.category_id, Annotation.segmentation,
                       Annotation.area, Annotation.bbox, Annotation.iscrowd, Annotation.keypoints,
                       Annotation.num_keypoints, Annotation.score, Annotation.source, Annotation.review_state,
                       Annotation.extra)
                .where(Annotation.review_state.in_(rule.states), Annotation.image_id.in_([r.id for r in batch]))
                .order_by(Annotation.id)).all()
        by_image: dict[int, list] = {}
        for a in anns:
            by_image.setdefault(a.image_id, []).append(a)
        del anns
        for r in batch:
            yield r, Instances.from_rows(by_image.pop(r.id, []), r.height, r.width)


def invalid(inst: Instances, i: int, image_id: int, error: Exception) -> UserError:
    """The error for an annotation whose stored segmentation cannot be exported (a row stored before the
    import checked segmentations)."""
    return UserError(f"annotation {inst.ann_ids[i]} (image {image_id}) cannot be exported: its segmentation is "
                     f"invalid ({error}); fix or delete it in the Label tab")


# --- the writer -----------------------------------------------------------------------------------------------

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # every entry's date: two zips of the same data are byte-identical


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` as a new temporary file renamed over it: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class ZipOut:
    """A zip written as a temporary file beside ``out`` and renamed to it when the ``with`` block ends without
    an error (else removed): ``out`` is the whole zip or what it was before. Entries in the order written,
    each dated ZIP_DATE."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def __enter__(self) -> "ZipOut":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.out.parent, suffix=".part")
        os.close(fd)
        self._zip = zipfile.ZipFile(self._tmp, "w")
        return self

    def write(self, name: str, data: bytes, *, compress: bool = True) -> None:
        self._zip.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), data,
                           compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)

    def copy(self, name: str, src: Path) -> None:
        """``src`` stored (not compressed: images are) as ``name``, streamed: never read whole into memory."""
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_STORED
        with open(src, "rb") as r:
            info.file_size = os.fstat(r.fileno()).st_size  # (as writestr sets it: the same bytes, zip64 when due)
            with self._zip.open(info, "w") as w:
                shutil.copyfileobj(r, w, 1 << 20)

    def __exit__(self, kind, value, tb) -> None:
        try:
            self._zip.close()
        finally:
            if kind is None:
                os.replace(self._tmp, self.out)
            else:
                _unlink(self._tmp)


class FolderOut:
    """A new folder ``out``, filled under a temporary name beside it and renamed to ``out`` when the ``with``
    block ends without an error (else removed): ``out`` holds the whole export or nothing. ``out`` may be an
    empty folder; anything else there (a file, a symbolic link, a folder holding something) is refused by name
    before anything is written."""

    def __init__(self, out: Path):
        self.out = Path(out)
        why = self._refused()
        if why:
            raise UserError(f"{self.out} {why}; nothing was written")

    def _refused(self) -> str | None:
        try:
            st = os.lstat(self.out)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "is a symbolic link (an export never writes through links): give a new folder"
        if not stat.S_ISDIR(st.st_mode):
            return "exists and is not a folder: give a new or empty folder"
        if any(os.scandir(self.out)):
            return "is a folder that holds files already: give a new or empty folder (an export never mixes " \
                   "its files with others)"
        return None

    def __enter__(self) -> "FolderOut":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name[:100]}-", suffix=".part"))
        return self

    def write(self, name: str, data: bytes) -> None:
        write_under(self.root, name, data)

    def copy(self, name: str, src: Path) -> None:
        write_under(self.root, name, src)

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.root, 0o777 & ~umask)  # (mkdtemp made it for its owner only)
            why = self._refused()  # something put there meanwhile
            if why:
                raise UserError(f"{self.out} {why}; nothing was written")
            os.replace(self.root, self.out)  # (replaces an empty folder)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise


def output(out: Path) -> ZipOut | FolderOut:
    """Where a format that writes a tree of files goes: ``out`` ending in .zip a zip, else a new folder."""
    return ZipOut(out) if Path(out).suffix.lower() == ".zip" else FolderOut(out)


def name_problems(files, root: Path | None = None) -> list[str]:
    """Why each file cannot be written under its name, for (image id, name, ...) tuples: a name against the
    rule (db.media.file_name_problem: stored by an older version), two names that would be a file and a folder
    at once, and, writing into the folder ``root``, a symbolic link or a file in the way on disk."""
    problems = []
    names = FileNames(fold=False)  # (what clashes on this machine; the import's rule keeps case apart too)
    for image_id, name, *_ in files:
        why = file_name_problem(name)
        if why is None and names.clash(name, image_id):
            why = clash_text(name, names.clash(name, image_id))
        if why is None and root is not None:
            why = in_the_way(root, name)
        if why is not None:
            problems.append(f"image {image_id}: file_name {name[:200]!r} {why}")
        else:
            names.add(name, image_id)
    return problems


def refuse(problems: list[str], hint: str = "") -> None:
    """Raise the UserError naming (the first 20 of) ``problems``, if any."""
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise UserError(f"{len(problems)} image(s) cannot be written, so nothing was written{hint}:\n  "
                        + "\n  ".join(shown))


def in_the_way(root: Path, name: str) -> str | None:
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


def write_under(root: Path, name: str, src: Path | bytes) -> None:
    """Write ``src`` (a file copied, or bytes) to ``root``/``name`` following no link below ``root``: each
    folder is opened relative to the one above with O_NOFOLLOW (a link put there since the check is refused,
    not followed), and the file is written as a new temporary file in its folder and renamed over the name (a
    link or hard link there is replaced, never written through)."""
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
            with os.fdopen(out, "wb") as f:
                if isinstance(src, bytes):
                    f.write(src)
                else:
                    with open(src, "rb") as r:
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
