"""Image ingestion from files, folders (recursive) and zip archives.

Every bad file is named with its reason and skipped; the rest is imported. Images are committed in
batches, so an interrupted import keeps what was already done.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from sqlalchemy import func, insert, select

from db.media import BadImage, prepare, write_media
from db.schema import Image, utcnow
from db.store import Store

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
    """One candidate file: a name for messages, the file name to store, and how to read it."""

    display: str
    file_name: str
    read: Callable[[], bytes]


def _safe_zip_name(name: str) -> str | None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        return None
    return str(p)


def iter_sources(paths: Iterable[str | Path], report: IngestReport,
                 shown: Callable[[Path], str] = str) -> Iterator[Source]:
    """Every candidate file under ``paths``; ``shown`` names a given path in messages."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            report.skipped.append((shown(path), "no such file or folder"))
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                if f.suffix.lower() == ".zip":
                    yield from _zip_sources(f, report, str(f))
                else:
                    yield Source(str(f), f.relative_to(path).as_posix(), f.read_bytes)
        elif path.suffix.lower() == ".zip":
            yield from _zip_sources(path, report, shown(path))
        else:
            yield Source(shown(path), path.name, path.read_bytes)


def _zip_sources(path: Path, report: IngestReport, name: str) -> Iterator[Source]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        report.skipped.append((name, f"not a readable zip archive: {e}"))
        return
    with zf:
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

            def read(info=info, zf_path=path):
                with zipfile.ZipFile(zf_path) as z:
                    return z.read(info)

            yield Source(display, safe, read)


def _unique_name(name: str, content_hash: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}_{content_hash[:8]}.{ext}" if dot else f"{name}_{content_hash[:8]}"


def ingest(
    store: Store,
    paths: Iterable[str | Path],
    *,
    progress: Callable[[int, str], None] | None = None,
    batch_size: int = 200,
    shown: Callable[[Path], str] = str,
) -> IngestReport:
    """Import image files, folders and zips into the store. ``progress(n_done, name)`` per file;
    ``shown`` names each given path in the report (its full path by default)."""
    report = IngestReport()
    with store.session() as s:
        known_hash = dict(s.execute(select(Image.content_hash, Image.id)).all())
        taken = set(s.scalars(select(Image.file_name)))
        next_id = (s.scalar(select(func.max(Image.id))) or 0) + 1
    batch: list[dict] = []

    def flush():
        if batch:
            with store.transaction() as s:
                s.execute(insert(Image), batch)
            batch.clear()

    for n, src in enumerate(iter_sources(paths, report, shown), start=1):
        if progress:
            progress(n, src.display)
        try:
            raw = src.read()
        except (OSError, zipfile.BadZipFile, RuntimeError) as e:
            report.skipped.append((src.display, f"cannot be read: {e}"))
            continue
        try:
            prepared = prepare(raw, store.settings.max_pixels)
        except BadImage as e:
            report.skipped.append((src.display, str(e)))
            continue
        if prepared.content_hash in known_hash:
            report.duplicates.append((src.display, known_hash[prepared.content_hash]))
            continue
        write_media(store.settings.media_dir, prepared)
        name = _unique_name(src.file_name, prepared.content_hash, taken)
        taken.add(name)
        now = utcnow()
        batch.append(
            dict(id=next_id, file_name=name, content_hash=prepared.content_hash, media_path=prepared.media_path,
                 width=prepared.width, height=prepared.height, status="new", row_version=1,
                 created_at=now, updated_at=now)
        )
        known_hash[prepared.content_hash] = next_id
        report.added.append((next_id, name))
        next_id += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    return report


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
