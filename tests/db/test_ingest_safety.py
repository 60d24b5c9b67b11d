"""Ingest under attack or contention (issue 7): zip bombs, huge archives, concurrent imports, symbolic
links, orphan media and 16-bit PNGs."""

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from db.coco_import import CocoRejected, import_coco
from db.ingest import clean_orphan_media, ingest
from db.media import media_writer, prepare
from db.schema import Image as ImageRow


def _png(seed: int, size=(12, 10)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_zip_bomb_entry_is_refused_unread(store, tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", _png(1))
        zf.writestr("zeros.bmp", b"\0" * (64 * 2 ** 20))  # 64 MiB that deflate to about 64 KiB
    read = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *a, **kw):
        read.append(getattr(name, "filename", name))
        return real_open(self, name, *a, **kw)

    zipfile.ZipFile.open = spy
    try:
        r = ingest(store, [z])
    finally:
        zipfile.ZipFile.open = real_open
    assert [n for _, n in r.added] == ["ok.png"]
    reason = dict(r.skipped)[f"{z}:zeros.bmp"]
    assert "zip bomb" in reason and "zeros.bmp" not in read


def test_entry_larger_than_declared_stops_at_the_limit(make_store, tmp_path):
    s = make_store(tmp_path / "st2", max_image_bytes=50_000)
    z = tmp_path / "big.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("big.bmp", os.urandom(80_000))
    r = ingest(s, [z])
    assert "over the limit of 50000 bytes" in dict(r.skipped)[f"{z}:big.bmp"]
    (tmp_path / "big.png").write_bytes(os.urandom(60_000))
    r = ingest(s, [tmp_path / "big.png"])
    assert "over the limit" in dict(r.skipped)[str(tmp_path / "big.png")]


def test_a_zip_is_opened_once_however_many_entries(store, tmp_path):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(60):
            zf.writestr(f"img{i:03d}.png", _png(i, (8, 8)))
    opened = []
    real_init = zipfile.ZipFile.__init__

    def counting(self, file, *a, **kw):
        opened.append(file)
        real_init(self, file, *a, **kw)

    zipfile.ZipFile.__init__ = counting
    try:
        r = ingest(store, [z])
    finally:
        zipfile.ZipFile.__init__ = real_init
    assert len(r.added) == 60 and len(opened) == 1


def test_two_imports_at_once_both_finish_with_ids_from_the_database(store, tmp_path):
    """The second import runs entirely while the first is between reading the store and writing its batch
    (as a UI upload during a CLI import): before, the first died with UNIQUE images.id."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i in range(5):
        (a / f"a{i}.png").write_bytes(_png(i))
        (b / f"b{i}.png").write_bytes(_png(100 + i))
    (b / "shared.png").write_bytes(_png(3))  # the same bytes as a/a3.png
    (b / "a0.png").write_bytes(_png(55))  # another file under a name the first import also uses
    done = []

    def in_between(n, name):
        if n == 1 and not done:
            done.append(ingest(store, [b / p for p in sorted(os.listdir(b))]))

    r1 = ingest(store, [a], progress=in_between)
    r2 = done[0]
    assert not r1.skipped and not r2.skipped
    added = r1.added + r2.added
    assert len({i for i, _ in added}) == len(added) == 11
    with store.session() as s:
        rows = s.query(ImageRow).all()
    assert len(rows) == 11 and len({r.file_name for r in rows}) == 11
    assert [n for n, _ in r1.duplicates] == [str(a / "a3.png")]
    assert clean_orphan_media(store) == 0


def test_a_killed_import_leaves_no_orphans_after_the_next_start(store, tmp_path):
    """The import kills itself (SIGKILL) after its first batch of 4 committed and 3 more files were
    written: those 3 are removed at the next start, the 4 committed stay, and re-running finishes."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    for i in range(9):
        (src / f"im{i}.png").write_bytes(_png(200 + i))
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from db.ingest import ingest\n"
        "from db.store import Settings, Store\n"
        "st = Store(Settings(store_dir=Path(sys.argv[1]), db_url=sys.argv[3] or None))\n"
        "def progress(n, name):\n"
        "    if n == 8:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "ingest(st, [Path(sys.argv[2])], progress=progress, batch_size=4)\n")
    r = subprocess.run([sys.executable, "-c", code, str(store.settings.store_dir), str(src),
                        store.settings.db_url or ""], cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == -9
    files = lambda: sorted(p.name for p in store.settings.media_dir.rglob("*.png"))  # noqa: E731
    assert len(files()) == 7
    with media_writer(store.settings):  # another import is running: nothing is touched
        assert clean_orphan_media(store) == 0
    assert clean_orphan_media(store) == 3
    with store.session() as s:
        assert sorted(Path(p).name for p in s.scalars(select(ImageRow.media_path))) == files()
    r = ingest(store, [src])
    assert len(r.added) == 5 and len(r.duplicates) == 4 and len(files()) == 9


def test_a_media_folder_shared_by_two_databases_loses_nothing(make_store, tmp_path):
    root = tmp_path / "shared"
    a = make_store(root, sqlite_file=tmp_path / "a.db")
    b = make_store(root, sqlite_file=tmp_path / "b.db")
    (tmp_path / "a.png").write_bytes(_png(1))
    (tmp_path / "b.png").write_bytes(_png(2))
    ingest(a, [tmp_path / "a.png"])
    ingest(b, [tmp_path / "b.png"])
    assert clean_orphan_media(a) == 0 and clean_orphan_media(b) == 0
    empty = make_store(root, sqlite_file=tmp_path / "empty.db")
    assert clean_orphan_media(empty) == 0
    assert len(list((root / "media").rglob("*.png"))) == 2


def test_symlinks_follow_one_rule_for_folders_and_coco(store, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret.png").write_bytes(_png(9))
    (root / "real.png").write_bytes(_png(10))
    (root / "out.png").symlink_to(outside / "secret.png")
    (root / "in.png").symlink_to(root / "real.png")
    r = ingest(store, [root])
    assert "outside the folder" in dict(r.skipped)[str(root / "out.png")]
    assert [n for _, n in r.added] == ["in.png"]  # the link inside is followed; real.png is its duplicate
    coco = {"images": [{"id": 1, "file_name": "out.png", "width": 12, "height": 10}],
            "annotations": [], "categories": []}
    with pytest.raises(CocoRejected, match="outside the images folder"):
        import_coco(store, coco, root)


def test_sixteen_bit_rgb_png_is_stored_as_eight_bit(store, tmp_path):
    arr = (np.random.default_rng(1).integers(0, 65535, (6, 5, 3))).astype(">u2")
    raw = _png16(arr)
    assert raw[24] == 16
    p = prepare(raw, 10 ** 6)
    assert p.data[24] == 8 and p.ext == ".png"
    with Image.open(io.BytesIO(p.data)) as im:
        assert im.mode == "RGB" and im.size == (5, 6)


def _png16(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_coco_upload_zip_is_unpacked_under_the_same_limits(store, tmp_path):
    from annotator.store_view import upload_coco

    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", _png(1))
        zf.writestr("../escape.png", _png(2))
        zf.writestr("bomb.bmp", b"\0" * (64 * 2 ** 20))
    coco = tmp_path / "c.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "a.png", "width": 12, "height": 10}], '
                    '"annotations": [], "categories": []}')
    msg = upload_coco(store, str(coco), [str(z)], False)
    assert msg.startswith("imported 1 image(s)")
    assert "imgs.zip:bomb.bmp" in msg and "zip bomb" in msg and "escapes its folder" in msg
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    assert "not a readable zip archive" in upload_coco(store, str(coco), [str(tmp_path / "broken.zip")], False)


def test_fifos_and_broken_links_are_named_not_waited_on(store, tmp_path):
    import os

    root = tmp_path / "odd"
    root.mkdir()
    (root / "ok.png").write_bytes(_png(31))
    os.mkfifo(root / "pipe.png")
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    r = ingest(store, [root])
    reasons = dict(r.skipped)
    assert [n for _, n in r.added] == ["ok.png"]
    assert "FIFO" in reasons[str(root / "pipe.png")]
    assert "broken symbolic link" in reasons[str(root / "dangling.png")]
    assert "loop" in reasons[str(root / "loop_a")]
    r = ingest(store, [root / "pipe.png"])  # given directly: refused at once, not read
    assert "FIFO" in dict(r.skipped)[str(root / "pipe.png")]


def test_the_archives_of_a_coco_upload_unpack_within_one_total(make_store, tmp_path):
    """Entries of up to 1 MiB escape the ratio check: a 7 MB archive of many such entries wrote 1.2 GB to the
    temporary folder. All the archives of one upload now unpack at most ``max_unpacked_bytes`` together,
    counted from their declared sizes before anything is written; over it, the upload is refused whole."""
    from annotator.store_view import upload_coco
    from db.ingest import Unpacker

    store = make_store(tmp_path / "st", max_unpacked_bytes=3 * 2 ** 20)
    zips = []
    for k in range(2):
        z = tmp_path / f"part{k}.zip"
        with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"a{k}.png", _png(k))
            for j in range(2):
                zf.writestr(f"pad{k}_{j}.bin", b"\0" * 2 ** 20)  # 1 MiB that deflates to about 1 KiB
        zips.append(str(z))
    coco = tmp_path / "c.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "a0.png", "width": 12, "height": 10}], '
                    '"annotations": [], "categories": []}')
    msg = upload_coco(store, str(coco), zips, False)
    assert msg.startswith("part1.zip: the archives of this import unpack to more than 3 MiB (max_unpacked_bytes")
    assert "nothing was imported" in msg
    with store.session() as s:
        assert s.query(ImageRow).count() == 0
    dest = tmp_path / "dest"
    dest.mkdir()
    unpacker = Unpacker(dest, store.settings)
    unpacker.add(Path(zips[0]))  # one archive fits: 2 MiB and a PNG
    with pytest.raises(Exception, match="unpack to more than 3 MiB"):
        unpacker.add(Path(zips[1]))
    assert sorted(p.name for p in dest.iterdir()) == ["a0.png", "pad0_0.bin", "pad0_1.bin"]  # nothing of the second
    assert upload_coco(store, str(coco), zips[:1], False).startswith("imported 1 image(s)")


def test_a_coco_upload_with_a_file_and_a_folder_of_one_name_skips_one_by_name(store, tmp_path):
    """'dup.png' and 'dup.png/inner.png' in one archive crashed the upload's unpacking (FileExistsError)."""
    from annotator.store_view import upload_coco

    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("dup.png", _png(1))
        zf.writestr("dup.png/inner.png", _png(2))
    coco = tmp_path / "c.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "dup.png", "width": 12, "height": 10}], '
                    '"annotations": [], "categories": []}')
    msg = upload_coco(store, str(coco), [str(z)], False)
    assert msg.startswith("imported 1 image(s)")
    assert "skipped: imgs.zip:dup.png/inner.png: another entry of that name, or a file where it needs a folder" in msg


def test_a_coco_file_is_parsed_within_its_memory_budget(tmp_path):
    """A 60 MB COCO file needed 724 MB to import: the file was read as bytes, then text, then parsed with a
    float object for each of its millions of coordinates. Now it is read as text once and each distinct
    number text becomes one shared float; the parse allocates under 4x the file's size (it was 7.6x; the whole
    import is measured by bench/store.py --coco-mb, docs/benchmarks.md)."""
    import json
    import tracemalloc

    from db.coco_import import load_json

    rng = np.random.default_rng(0)
    anns = [{"id": k, "image_id": 1 + k // 10, "category_id": 1, "iscrowd": 0, "area": 50.5,
             "bbox": [1.5, 2.25, 10.0, 8.0], "segmentation": [np.round(rng.uniform(0, 64, 64), 2).tolist()]}
            for k in range(1, 8001)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"images": [], "annotations": anns, "categories": []}))
    del anns
    size = path.stat().st_size
    tracemalloc.start()
    try:
        data = load_json(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * size, f"{peak / size:.1f}x the file's {size} bytes"
    assert data == json.loads(path.read_text())  # the same values
