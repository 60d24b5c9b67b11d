"""Content-addressed media files and image normalisation at ingest.

An image is identified by the SHA-256 of the bytes it arrived with (same bytes twice = one image). What
is stored is what every later step sees: EXIF orientation already applied, a mode that browsers and
``PIL.Image.convert("RGB")`` read the same way; the stored width and height are those of the stored file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False

# Stored unchanged when no transform is needed; anything else is re-encoded losslessly as PNG.
_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_KEEP_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}


class BadImage(ValueError):
    """A file that cannot be ingested; the message is the reason shown to the user."""


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    content_hash: str
    data: bytes  # what is written to the media store
    ext: str
    width: int
    height: int

    @property
    def media_path(self) -> str:
        return f"{self.content_hash[:2]}/{self.content_hash}{self.ext}"


def shape_problem(width: int, height: int, limits) -> str | None:
    """Why an image of this size cannot be labeled here (None when it can), under ``limits`` (the store's
    Settings: ``min_side``, ``max_aspect``, ``max_side``). The same answer whichever way round the image is."""
    short, long = sorted((int(width), int(height)))
    if short < limits.min_side:
        return (f"{width}x{height}: a side of {short} pixel(s) is under the minimum of {limits.min_side} "
                "(nothing there to label)")
    if long > limits.max_side:
        return (f"{width}x{height}: a side of {long} pixels is over the maximum of {limits.max_side} "
                "(wider than a browser canvas can be)")
    if long > limits.max_aspect * short:
        return (f"{width}x{height}: {long / short:.3g}:1 is more elongated than the maximum of "
                f"{limits.max_aspect:g}:1 (the model would shrink its short side to a few pixels or none)")
    return None


def prepare(raw: bytes, max_pixels: int, limits=None) -> PreparedImage:
    """Validate and normalise one image file's bytes; raises BadImage with the reason. With ``limits`` (the
    store's Settings) an odd shape (``shape_problem``) is refused too, before the pixels are decoded."""
    if not raw:
        raise BadImage("empty file (0 bytes)")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage(f"{w}x{h} = {w * h} pixels is over the limit of {max_pixels}")
            odd = shape_problem(w, h, limits) if limits is not None and w and h else None
            if odd:
                raise BadImage(odd)
            fmt = img.format
            img.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        kind = _signature(raw)
        if kind:
            raise BadImage(f"corrupt image: starts like a {kind} file but cannot be decoded") from None
        raise BadImage("not an image (no known image format)") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"over the pixel limit: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt or truncated image: {e}") from None
    if w == 0 or h == 0:
        raise BadImage("image has zero width or height")

    orientation = img.getexif().get(0x0112, 1)
    needs_transform = (orientation not in (1, None) or fmt not in _KEEP_FORMATS or img.mode not in _KEEP_MODES
                       or _png_bit_depth(raw) == 16)
    if not needs_transform:
        return PreparedImage(digest, raw, _KEEP_FORMATS[fmt], w, h)

    img = ImageOps.exif_transpose(img)
    img = _normalise_mode(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return PreparedImage(digest, buf.getvalue(), ".png", img.width, img.height)


def _png_bit_depth(raw: bytes) -> int | None:
    """A PNG's bits per channel from its header. Pillow opens 16-bit RGB(A) PNGs as 8-bit modes, so the
    mode alone does not show that the file itself is 16-bit."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and len(raw) > 24:
        return raw[24]
    return None


_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _signature(raw: bytes) -> str | None:
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for sig, kind in _SIGNATURES.items() if raw.startswith(sig)), None)


def _normalise_mode(img: Image.Image) -> Image.Image:
    if img.mode in _KEEP_MODES:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if img.mode.startswith("I;16") or (lo >= 0 and hi <= 65535 and img.mode == "I"):
            a = a / 257.0  # 16-bit -> 8-bit keeps the full range mapping
        elif hi > lo:
            a = (a - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("PA",):
        return img.convert("RGBA")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...


class MediaJournal:
    """The media files an import wrote whose image rows are not committed yet, one path per line in a file
    of its own under ``store_dir/pending``. Cleared when their rows commit, removed when the import ends; a
    journal left behind is an import that was killed, and exactly its files are the orphans. The clean-up
    never looks at any other file, so a media folder shared by several databases (``--db``) loses nothing."""

    def __init__(self, settings):
        folder = Path(settings.store_dir) / "pending"
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=f"import-{os.getpid()}-", suffix=".txt")
        self.path, self._f = Path(name), os.fdopen(fd, "w")

    def add(self, media_path: str) -> None:
        """Called before the file is written."""
        self._f.write(media_path + "\n")
        self._f.flush()

    def committed(self) -> None:
        """Every file added so far now has its committed row."""
        self._f.seek(0)
        self._f.truncate()
        self._f.flush()

    def close(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


def write_new_media(media_dir: Path, prepared: PreparedImage, journal: MediaJournal) -> bool:
    """Write a media file unless it exists; a new one is journaled first. Returns True when written."""
    dest = Path(media_dir) / prepared.media_path
    if dest.exists():
        return False
    journal.add(prepared.media_path)
    write_media(media_dir, prepared)
    return True


@contextmanager
def media_writer(settings) -> Iterator[MediaJournal]:
    """Held (shared) while a process writes media files whose rows are not yet committed, so that the
    orphan clean-up at start (which takes it exclusively) never runs during an import. Yields the import's
    journal of uncommitted files."""
    lock = Path(settings.store_dir) / "media.lock"
    with open(lock, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        journal = MediaJournal(settings)
        try:
            yield journal
        finally:
            journal.close()
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def media_exclusive(settings) -> Iterator[bool]:
    """Yields True when no process is writing media (the lock was free), False when one is."""
    lock = Path(settings.store_dir) / "media.lock"
    with open(lock, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an image's file_name (None when it can). A file_name is where an export
    writes the image, under its images folder or in its zip: a relative path of plain names joined by '/'
    (no absolute path, '..', '.', empty part, trailing '/', backslash or control character)."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > 1000:
        return "is longer than 1000 characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "holds a control character (a line break, tab or NUL)"
    if "\\" in name:
        return "holds a backslash; use '/' between folders"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path; file names are relative to the images folder"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "holds an empty, '.' or '..' part (or ends with '/')"
    return None


def safe_file_name(name: str) -> str:
    """A file name found on disk or in a zip made valid: control characters and backslashes become '_'."""
    return "".join("_" if ord(ch) < 32 or ord(ch) == 127 or ch == "\\" else ch for ch in name)


def read_file(path: Path, limit: int) -> bytes:
    """A file's bytes, refused (BadImage) unread when it is larger than ``limit``."""
    size = Path(path).stat().st_size
    if size > limit:
        raise BadImage(f"{size} bytes is over the limit of {limit} bytes for one image file")
    with open(path, "rb") as f:
        data = f.read(size)  # what is there (read(limit) would allocate the whole limit for every file)
        while len(data) <= limit:  # the file grew while being read: take the rest, up to the limit
            more = f.read(min(1 << 20, limit + 1 - len(data)))
            if not more:
                break
            data += more
    if len(data) > limit:
        raise BadImage(f"over the limit of {limit} bytes for one image file")
    return data


def write_media(media_dir: Path, prepared: PreparedImage) -> Path:
    """Write atomically (temporary file, then rename); an existing file is left as it is."""
    dest = Path(media_dir) / prepared.media_path
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(prepared.data)
    os.replace(tmp, dest)
    return dest


def load_rgb(path: Path, at_least: int | None = None) -> Image.Image:
    """A stored media file as an RGB image (already oriented at ingest). With ``at_least`` (pixels), a JPEG
    may be decoded at a reduced scale (1/2, 1/4 or 1/8) whose sides stay at least that large: for a
    thumbnail, a 24 MP photo is then never decoded whole."""
    with Image.open(path) as img:
        if at_least is not None and img.format == "JPEG":
            w, h = img.size
            k = max(1, max(w, h) // max(1, int(at_least)))
            img.draft("RGB", (max(1, w // k), max(1, h // k)))
        return img.convert("RGB")


def browser_ready(path: Path) -> str | None:
    """The MIME type under which a browser shows a stored media file with exactly the pixels ``load_rgb``
    gives (an 8-bit RGB or grey JPEG or PNG without transparency), else None (it must be re-encoded)."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG" and img.mode in ("RGB", "L"):
                return "image/jpeg"
            if img.format == "PNG" and img.mode in ("RGB", "L") and "transparency" not in img.info:
                return "image/png"
    except (OSError, ValueError):
        return None
    return None
