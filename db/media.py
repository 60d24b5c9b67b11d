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
import unicodedata
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


MAX_NAME_PART_BYTES = 255  # what ext4, XFS, btrfs, APFS and NTFS hold in one name of a path


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an image's file_name (None when it can): the one rule for names, applied when
    images come in (``import-images`` makes a name follow it or skips the file, a COCO file is refused), so
    that an export can always write every image under its name, into a folder or a zip that unpacks on
    Linux, macOS and Windows alike.

    A file_name is a relative path of plain names joined by '/': no absolute path or drive ('C:'), no '..',
    '.' or empty part, no trailing '/', no backslash, no control character or NUL, no lone surrogate, no
    part ending in '.' or ' ' (Windows drops those, making 'a.png.' the file 'a.png'), no part over
    MAX_NAME_PART_BYTES bytes of UTF-8, and at most ``Image.file_name``'s length in all. Names that
    clash with each other (one a folder of another, or the same file where case or Unicode normalisation
    is ignored) are ``FileNames``' business."""
    from db.schema import Image, text_problem  # (schema is the column lengths' one source)

    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in name):
        return "holds a control character (a line break, tab or NUL)"
    problem = text_problem(Image.file_name, name)
    if problem:
        return problem
    if "\\" in name:
        return "holds a backslash; use '/' between folders"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        return "is an absolute path; file names are relative to the images folder"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "holds an empty, '.' or '..' part (or ends with '/')"
        if part[-1] in ". ":
            return f"has a part ending in {part[-1]!r} ({part[:40]!r}), which Windows drops from file names"
        if len(part.encode("utf-8")) > MAX_NAME_PART_BYTES:
            return (f"has a part of {len(part.encode('utf-8'))} bytes, over the {MAX_NAME_PART_BYTES} bytes a "
                    "file system holds in one name")
    return None


def safe_file_name(name: str) -> str:
    """A file name found on disk or in a zip made to follow ``file_name_problem``'s rule where only its
    characters break it: control characters, backslashes and a drive's ':' become '_', and a part loses the
    dots and spaces at its end (as Windows would make it). What is still refused (a name too long) is
    skipped by the import."""
    out = "".join("_" if ord(ch) < 32 or 127 <= ord(ch) < 160 or ch == "\\" else ch for ch in name)
    out = out.encode("utf-8", "replace").decode("utf-8")  # (a lone surrogate from an odd file system name)
    if len(out) > 1 and out[1] == ":" and out[0].isalpha():
        out = out[0] + "_" + out[2:]
    return "/".join(p if p in ("", ".", "..") else p.rstrip(". ") or "_" for p in out.split("/"))


def name_key(name: str) -> str:
    """``name`` as a file system that ignores case and Unicode normalisation sees it (macOS, Windows): two
    names with one key are one file there. Case is folded character by character, as those file systems do
    ('ß' stays 'ß': 'straße.png' and 'strasse.png' are two files there too)."""
    return "".join(low if len(low := ch.lower()) == 1 else ch for ch in unicodedata.normalize("NFC", name))


class FileNames:
    """The file names taken (by a store's images, a COCO file's, an export's), to find a new name's clash with
    one of them before anything is written: the same file where case or Unicode normalisation is ignored
    ('A.png' and 'a.png'), or one name a folder of another ('dup.png' and 'dup.png/inner.png'). Each name
    has an owner (an image id) whose own names never clash with each other."""

    def __init__(self, names=(), *, fold: bool = True):
        """``fold``: names equal but for case or Unicode normalisation clash (what a name may be at import);
        without, only names that clash on this machine's file system do (what an export checks)."""
        self._key = name_key if fold else str
        self._files: dict[str, tuple[str, object]] = {}  # key -> (name, owner)
        self._folders: dict[str, tuple[str, object]] = {}  # key of a folder -> (a name under it, its owner)
        for name, owner in names:
            self.add(name, owner)

    def clash(self, name: str, owner: object = None) -> tuple[str, object, str] | None:
        """(the name taken, its owner, why) when ``name`` clashes with a name of another owner, else None."""
        key = self._key(name)
        got = self._files.get(key)
        if got is not None and (got[1] != owner or owner is None):
            return (*got, "the same file" if got[0] == name else
                    "the same file on a file system that ignores case or Unicode normalisation (macOS, Windows)")
        got = self._folders.get(key)
        if got is not None and (got[1] != owner or owner is None):
            return (*got, "a folder of it")
        parts = key.split("/")
        for k in range(1, len(parts)):
            got = self._files.get("/".join(parts[:k]))
            if got is not None and (got[1] != owner or owner is None):
                return (*got, "a file where it needs a folder")
        return None

    def add(self, name: str, owner: object = None) -> None:
        key = self._key(name)
        self._files.setdefault(key, (name, owner))
        parts = key.split("/")
        for k in range(1, len(parts)):
            self._folders.setdefault("/".join(parts[:k]), (name, owner))


def clash_text(name: str, got: tuple[str, object, str], owner_word: str = "image id") -> str:
    """A clash found by ``FileNames.clash`` in words, to follow the name: "is a folder of image id 17's ..." """
    taken, owner, why = got
    whose = f"{owner_word} {owner}'s " if owner is not None else ""
    if why == "a folder of it":
        return f"is a folder of {whose}'{taken}': a name is a file or a folder, not both"
    if why == "a file where it needs a folder":
        return f"lies in a folder that is {whose}file '{taken}': a name is a file or a folder, not both"
    return f"is {why} as {whose}'{taken}'"


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


def load_rgb(path: Path, at_least: int | None = None, fit: tuple[int, int] | None = None) -> Image.Image:
    """A stored media file as an RGB image (already oriented at ingest). With ``at_least`` (pixels), a JPEG
    may be decoded at a reduced scale (1/2, 1/4 or 1/8) whose sides stay at least that large: for a
    thumbnail, a 24 MP photo is then never decoded whole. With ``fit`` (width, height), at the most reduced
    of those scales that is still at least that wide and that tall (a network that shrinks the image anyway)."""
    with Image.open(path) as img:
        if img.format == "JPEG" and (at_least is not None or fit is not None):
            w, h = img.size
            if fit is not None:
                want = (max(1, min(w, int(fit[0]))), max(1, min(h, int(fit[1]))))
            else:
                k = max(1, max(w, h) // max(1, int(at_least)))
                want = (max(1, w // k), max(1, h // k))
            img.draft("RGB", want)
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
