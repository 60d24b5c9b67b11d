"""Image ingestion from files, folders (recursive) and zip archives.

Every bad file is named with its reason and skipped; the rest is imported. Images are committed in
batches, so an interrupted import keeps what was already done.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from db.errors import UserError
from db.media import (BadImage, FileNames, file_name_problem, media_exclusive, media_writer, prepare, read_file,
                      safe_file_name, write_new_media)
from db.schema import Image, utcnow
from db.store import Settings, Store


# What reading one file or zip entry can raise besides BadImage: an unreadable file, a corrupt archive
# member (bad CRC, truncated deflate stream, an unsupported compression method or an encrypted entry).
READ_ERRORS = (OSError, zipfile.BadZipFile, RuntimeError, EOFError, zlib.error, NotImplementedError)


@dataclasses.dataclass
class IngestReport:
    added: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (image id, file name)
    duplicates: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (name, existing id)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (name, reason)

    def lines(self) -> list[str]:
        out = [f"imported {len(self.added)} image(s)"]
        out += [f"duplicate: {n} (same bytes as image {i})" for n, i in self.duplicates]
        out += [f"skipped: {n}: {r}" for n, r in self.skipped]
        return out


@dataclasses.dataclass
class Source:
    """One candidate file: a name for messages, the file name to store, how to read it (``read(limit)``: its
    bytes, BadImage past ``limit``; the store's limit for one image when not given), and its size as
    declared (a zip entry's header) or found, for budgets."""

    display: str
    file_name: str
    read: Callable[..., bytes]
    size: int = 0


def _safe_zip_name(name: str) -> str | None:
    """The entry's path inside the archive, or None when it escapes it (absolute, or through '..'). A drive
    ('c:x.png') escapes nothing here: the rule for names (db.media.safe_file_name) makes it 'c_x.png'."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        return None
    return str(p)


def iter_sources(paths: Iterable[str | Path], report: IngestReport, settings: Settings,
                 shown: Callable[[Path], str] = str) -> Iterator[Source]:
    """Every candidate file under ``paths``; ``shown`` names a given path in messages.

    Symbolic links inside a given folder are followed only when they point inside that folder (the same
    rule as COCO import's file names); a linked folder is not descended into, since what it points to
    inside the folder is imported where it lies."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            report.skipped.append((shown(path), "no such file or folder"))
        elif path.is_dir():
            root = path.resolve()
            for f in _walk(path):
                why = _not_regular(f)
                if why:
                    report.skipped.append((str(f), why))
                elif f.is_symlink() and not f.resolve().is_relative_to(root):
                    report.skipped.append((str(f), "symbolic link to a file outside the folder (only links "
                                                   "inside the imported folder are followed)"))
                elif f.suffix.lower() == ".zip":
                    yield from _zip_sources(f, report, str(f), settings)
                else:
                    yield Source(str(f), f.relative_to(path).as_posix(),
                                 lambda f=f: read_file(f, settings.max_image_bytes))
        elif why := _not_regular(path):
            report.skipped.append((shown(path), why))
        elif path.suffix.lower() == ".zip":
            yield from _zip_sources(path, report, shown(path), settings)
        else:
            yield Source(shown(path), path.name, lambda path=path: read_file(path, settings.max_image_bytes))


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not read as a file (reading a FIFO would wait forever), or None."""
    if path.is_symlink() and not path.exists():
        return "broken symbolic link (or a loop of links)"
    if not path.is_file():
        return "not a regular file (a FIFO, socket or device)"
    return None


def _walk(folder: Path) -> list[Path]:
    """Every entry under ``folder`` that is not a folder (recursive, links to folders not descended), sorted."""
    out = []
    for dirpath, dirs, files in os.walk(folder):
        here = Path(dirpath)
        out += [here / f for f in files]
        out += [here / d for d in dirs if (here / d).is_symlink() and not (here / d).exists()]  # broken links
    return sorted(out)


def _zip_sources(path: Path, report: IngestReport, name: str, settings: Settings) -> Iterator[Source]:
    """The archive stays open while its entries are read (reopening it per entry is quadratic). Each
    entry's declared size and expansion ratio are checked before it is read, and reading stops at the
    size limit whatever the header claims, so a zip bomb costs neither memory nor time."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        report.skipped.append((name, f"not a readable zip archive: {e}"))
        return
    with zf:
        yield from _zip_entries(zf, report, name, settings)


def _zip_entries(zf: zipfile.ZipFile, report: IngestReport, name: str, settings: Settings) -> list[Source]:
    """The entries of the open archive ``zf`` that may be read, in name order; the others are named in
    ``report`` with the reason."""
    limit, ratio = settings.max_image_bytes, settings.max_zip_ratio
    out = []
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        if info.is_dir():
            continue
        display = f"{name}:{info.filename}"
        safe = _safe_zip_name(info.filename)
        if safe is None:
            report.skipped.append((display, "zip entry escapes its folder (absolute path or '..')"))
            continue
        if PurePosixPath(safe).name.startswith("__MACOSX") or "/__MACOSX/" in f"/{safe}":
            continue
        problem = zip_entry_problem(info, limit, ratio)
        if problem:
            report.skipped.append((display, problem))
            continue
        out.append(Source(display, safe, lambda lim=limit, info=info: read_zip_entry(zf, info, lim), info.file_size))
    return out


def zip_entry_problem(info: zipfile.ZipInfo, limit: int, ratio: int) -> str | None:
    """Why a zip entry is refused before reading it (None when it may be read)."""
    if info.file_size > limit:
        return f"declares {info.file_size} bytes, over the limit of {limit} bytes for one image file"
    if info.file_size > 2 ** 20 and info.file_size > ratio * max(1, info.compress_size):
        return (f"expands {info.file_size // max(1, info.compress_size)}x ({info.compress_size} -> "
                f"{info.file_size} bytes): refused as a zip bomb (limit {ratio}x)")
    return None


def read_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """An entry's bytes, read in a stream that stops at ``limit`` (headers can lie about sizes)."""
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BadImage(f"expands past the limit of {limit} bytes for one image file")
    return data


class Unpacker:
    """Unpacks archives of images into ``dest`` (for a COCO import whose file names are relative paths), under
    the same rules as ingest (entries escaping the folder, over the size limit or expanding like a bomb are
    skipped unread) and one more: all the archives of one import together unpack at most
    ``settings.max_unpacked_bytes`` (entries of up to 1 MiB escape the ratio check, so many of them could
    otherwise fill the disk from a small archive; each entry counts at least a disk block, so a million
    empty ones are refused too). Declared sizes are added up before anything is written,
    and reading stops where the limit is reached whatever the headers say. ``skipped``: (entry, reason)."""

    def __init__(self, dest: Path, settings: Settings):
        self.dest, self.settings = Path(dest), settings
        self.unpacked = 0  # bytes written so far
        self.skipped: list[tuple[str, str]] = []

    def add(self, path: Path) -> None:
        """Unpack one archive. Raises UserError for an unreadable archive and when the archives together
        would unpack past the limit (then the import must not go on with part of its images)."""
        report = IngestReport()
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise UserError(f"{path.name}: not a readable zip archive: {e}") from None
        with zf:
            self._unpack(path, _zip_entries(zf, report, path.name, self.settings), report)
        self.skipped += report.skipped

    BLOCK = 4096  # what the smallest file takes on disk: each entry counts at least this (many empty entries)

    def _unpack(self, path: Path, sources: list[Source], report: IngestReport) -> None:
        declared = sum(max(src.size, self.BLOCK) for src in sources)
        if self.unpacked + declared > self.settings.max_unpacked_bytes:
            raise self._too_much(path, self.unpacked + declared)
        for src in sources:
            left = self.settings.max_unpacked_bytes - self.unpacked
            try:
                data = src.read(min(self.settings.max_image_bytes, left))
            except BadImage as e:
                if left < self.settings.max_image_bytes:  # stopped by the total, not by the entry's own limit
                    raise self._too_much(path, self.settings.max_unpacked_bytes + 1) from None
                report.skipped.append((src.display, str(e)))
                continue
            except READ_ERRORS as e:
                report.skipped.append((src.display, str(e)))
                continue
            target = self.dest / src.file_name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as f:  # (never over another entry, never through a link)
                    f.write(data)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                report.skipped.append((src.display, "another entry of that name, or a file where it needs a "
                                                    "folder (a name is a file or a folder, not both)"))
                continue
            except OSError as e:
                report.skipped.append((src.display, f"cannot be unpacked: {e.strerror or e}"))
                continue
            self.unpacked += max(len(data), self.BLOCK)

    def copy(self, path: Path) -> None:
        """Put one uploaded image file (not an archive) beside the unpacked ones, under its own name; one
        whose name an entry took is skipped by name."""
        try:
            with open(path, "rb") as src, open(self.dest / path.name, "xb") as dst:
                shutil.copyfileobj(src, dst)
        except (FileExistsError, IsADirectoryError):
            self.skipped.append((path.name, "an unpacked entry has that name already"))

    def _too_much(self, path: Path, size: int) -> UserError:
        limit = self.settings.max_unpacked_bytes
        return UserError(f"{path.name}: the archives of this import unpack to more than {limit // 2 ** 20} MiB "
                         f"(max_unpacked_bytes; {size // 2 ** 20} MiB or more), so nothing was imported: import "
                         "that many images from a folder (app.py import-coco FILE.json --images DIR)")


def _unique_name(name: str, content_hash: str, taken: FileNames) -> str | None:
    """``name``, or when it clashes with a name ``taken`` (db.media.FileNames: the same file where case is
    ignored, or a file and a folder of one name), ``name`` with the start of the content hash added to one
    of its parts (the file's own name first, then each folder's); None when no such name is free and valid."""
    if taken.clash(name) is None:
        return name
    parts = name.split("/")
    for n in (8, 16):
        tag = content_hash[:n]
        stem, dot, ext = parts[-1].rpartition(".")
        leaf = f"{stem}_{tag}.{ext}" if dot and stem else f"{parts[-1]}_{tag}"
        candidates = ["/".join(parts[:-1] + [leaf])]
        candidates += ["/".join(parts[:k] + [f"{parts[k]}_{tag}"] + parts[k + 1:]) for k in range(len(parts) - 1)]
        for c in candidates:
            if taken.clash(c) is None and file_name_problem(c) is None:
                return c
    return None


def ingest(
    store: Store,
    paths: Iterable[str | Path],
    *,
    progress: Callable[[int, str], None] | None = None,
    batch_size: int = 200,
    shown: Callable[[Path], str] = str,
) -> IngestReport:
    """Import image files, folders and zips into the store. ``progress(n_done, name)`` per file;
    ``shown`` names each given path in the report (its full path by default).

    Image ids come from the database. Another import running at the same time (a second CLI import, an
    upload in the UI) cannot make this one fail: a batch that collides with it on a file's bytes or name
    is written again row by row, reporting the duplicate or renaming the file."""
    report = IngestReport()
    with store.session() as s:
        known_hash = dict(s.execute(select(Image.content_hash, Image.id)).all())
        taken = FileNames(s.execute(select(Image.file_name, Image.id)))
    batch: list[dict] = []
    shown_names: list[str] = []
    batch_hashes: set[str] = set()  # content hashes in ``batch``
    new_ids: dict[str, int] = {}  # content hash -> id, for images added by this run
    repeats: list[tuple[str, str]] = []  # (name, content hash) of second copies of files added by this run

    def flush():
        if not batch:
            return
        try:
            with store.transaction() as s:
                ids = s.scalars(insert(Image).returning(Image.id, sort_by_parameter_order=True), batch).all()
            journal.committed()
            report.added += [(i, row["file_name"]) for i, row in zip(ids, batch)]
            new_ids.update((row["content_hash"], i) for i, row in zip(ids, batch))
        except IntegrityError:
            for row, display in zip(batch, shown_names):
                got = _insert_one(store, row, display, report)
                if got is not None:
                    new_ids[row["content_hash"]] = got
            journal.committed()  # each row is in (or its bytes belong to an image that is)
        batch.clear()
        shown_names.clear()
        batch_hashes.clear()

    with media_writer(store.settings) as journal:
        for n, src in enumerate(iter_sources(paths, report, store.settings, shown), start=1):
            if progress:
                progress(n, src.display)
            name = safe_file_name(src.file_name)
            if file_name_problem(name):  # (the store's rule for names: an export writes the file under it)
                report.skipped.append((src.display, f"its name {file_name_problem(name)}"))
                continue
            try:
                raw = src.read()
                prepared = prepare(raw, store.settings.max_pixels, store.settings)
            except BadImage as e:
                report.skipped.append((src.display, str(e)))
                continue
            except READ_ERRORS as e:
                report.skipped.append((src.display, f"cannot be read: {e}"))
                continue
            if prepared.content_hash in known_hash:
                report.duplicates.append((src.display, known_hash[prepared.content_hash]))
                continue
            if prepared.content_hash in new_ids or prepared.content_hash in batch_hashes:
                repeats.append((src.display, prepared.content_hash))
                continue
            name = _unique_name(name, prepared.content_hash, taken)
            if name is None:
                report.skipped.append((src.display, "its name clashes with names in the store, and so does every "
                                                    "name made from it"))
                continue
            write_new_media(store.settings.media_dir, prepared, journal)
            taken.add(name)
            now = utcnow()
            batch.append(dict(file_name=name, content_hash=prepared.content_hash, media_path=prepared.media_path,
                              width=prepared.width, height=prepared.height, status="new", row_version=1,
                              created_at=now, updated_at=now))
            shown_names.append(src.display)
            batch_hashes.add(prepared.content_hash)
            if len(batch) >= batch_size:
                flush()
        flush()
    report.duplicates += [(name, new_ids[h]) for name, h in repeats if h in new_ids]
    return report


def _insert_one(store: Store, row: dict, display: str, report: IngestReport) -> int | None:
    """One image row after its batch collided with a concurrent import."""
    for attempt in range(2):
        try:
            with store.transaction() as s:
                new_id = s.scalar(insert(Image).returning(Image.id), row)
            report.added.append((new_id, row["file_name"]))
            return new_id
        except IntegrityError:
            with store.session() as s:
                same = s.scalar(select(Image.id).where(Image.content_hash == row["content_hash"]))
            if same is not None:
                report.duplicates.append((display, same))
                return same
            other = _unique_name(row["file_name"], row["content_hash"], FileNames([(row["file_name"], None)]))
            if other is None:
                break
            row = {**row, "file_name": other}
    report.skipped.append((display, "could not be written: its file name kept colliding with a concurrent import"))
    return None


def clean_orphan_media(store: Store) -> int:
    """Remove the media files a killed import wrote without committing their rows (its journal under
    ``store_dir/pending`` lists them) unless an image row of this store uses them, and half-written
    ``.part`` files. No other file is ever looked at. Skipped while another process is importing. Returns
    how many files went."""
    with media_exclusive(store.settings) as free:
        if not free:
            return 0
        root = store.settings.media_dir
        removed = 0
        for journal in sorted((Path(store.settings.store_dir) / "pending").glob("import-*.txt")):
            listed = [line.strip() for line in journal.read_text().splitlines() if line.strip()]
            with store.session() as s:
                used = set(s.scalars(select(Image.media_path).where(Image.media_path.in_(listed)))) if listed else set()
            for rel in listed:
                f = root / rel
                if rel not in used and f.resolve().is_relative_to(root.resolve()) and f.is_file():
                    f.unlink()
                    removed += 1
            journal.unlink(missing_ok=True)
        for part in root.glob("*/*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed


def count_sources(paths: Iterable[str | Path]) -> int:
    """Rough number of files to look at, for a progress bar's total."""
    total = 0
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            total += sum(len(files) for _, _, files in os.walk(p))
        elif p.suffix.lower() == ".zip" and p.is_file():
            try:
                with zipfile.ZipFile(p) as z:
                    total += sum(1 for i in z.infolist() if not i.is_dir())
            except (zipfile.BadZipFile, OSError):
                total += 1
        else:
            total += 1
    return total
