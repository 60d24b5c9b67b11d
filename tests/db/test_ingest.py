import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from db.ingest import ingest
from db.media import load_rgb
from db.schema import Image as ImageRow


def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _rows(store):
    with store.session() as s:
        return {r.file_name: r for r in s.query(ImageRow).all()}


def test_bad_files_are_named_skipped_and_rest_imported(store, tmp_path):
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    good = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    (src / "deep" / "er" / "good.png").write_bytes(_png(good))
    (src / "zero.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("hello")
    full = io.BytesIO()
    Image.fromarray(good).save(full, "JPEG")
    (src / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (src / "corrupt.png").write_bytes(_png(good)[:40] + b"\x00" * 200)
    report = ingest(store, [src])
    reasons = dict(report.skipped)
    assert [n for _, n in report.added] == ["deep/er/good.png"]
    assert "0 bytes" in reasons[str(src / "zero.jpg")]
    assert "not an image" in reasons[str(src / "notes.txt")]
    assert "truncated" in reasons[str(src / "truncated.jpg")]
    assert "corrupt" in reasons[str(src / "corrupt.png")]


def test_pixel_limit(make_store, tmp_path):
    store = make_store(tmp_path / "s", max_pixels=100)
    f = tmp_path / "big.png"
    f.write_bytes(_png(np.zeros((11, 10), np.uint8)))
    report = ingest(store, [f])
    assert not report.added and "over the limit" in report.skipped[0][1]


def test_duplicates_are_one_image(store, tmp_path):
    data = _png(np.full((9, 9, 3), 9, np.uint8))
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "b.png").write_bytes(data)
    r = ingest(store, [tmp_path / "a.png", tmp_path / "b.png"])
    assert len(r.added) == 1 and r.duplicates == [(str(tmp_path / "b.png"), 1)]
    r2 = ingest(store, [tmp_path / "a.png"])
    assert r2.duplicates and not r2.added


def test_zip_archives_and_escaping_entries(store, tmp_path):
    z = tmp_path / "pack.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("imgs/one.png", _png(np.full((8, 12, 3), 1, np.uint8)))
        zf.writestr("imgs/two.png", _png(np.full((8, 12, 3), 2, np.uint8)))
        zf.writestr("../evil.png", _png(np.full((8, 12, 3), 3, np.uint8)))
        zf.writestr("/abs.png", _png(np.full((8, 12, 3), 4, np.uint8)))
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04garbage")
    r = ingest(store, [z, tmp_path / "broken.zip"])
    assert sorted(n for _, n in r.added) == ["imgs/one.png", "imgs/two.png"]
    reasons = " ".join(reason for _, reason in r.skipped)
    assert reasons.count("escapes its folder") == 2 and "not a readable zip" in reasons


def test_same_name_different_content_gets_unique_name(store, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "p.png").write_bytes(_png(np.full((8, 8, 3), 1, np.uint8)))
    (tmp_path / "y" / "p.png").write_bytes(_png(np.full((8, 8, 3), 2, np.uint8)))
    r = ingest(store, [tmp_path / "x" / "p.png", tmp_path / "y" / "p.png"])
    names = [n for _, n in r.added]
    assert names[0] == "p.png" and names[1].startswith("p_") and len(set(names)) == 2


def test_exif_orientation_applied_once_and_sizes_agree(store, tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the left of the raw pixels
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    ingest(store, [tmp_path / "rot.jpg"])
    row = _rows(store)["rot.jpg"]
    stored = load_rgb(store.media_file(row.media_path))
    assert (row.width, row.height) == stored.size == (20, 40)
    a = np.asarray(stored)
    assert a[:10, :, 0].mean() > 200 and a[-10:, :, 0].mean() < 50  # band now on top
    with Image.open(store.media_file(row.media_path)) as again:
        assert again.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "1"])
def test_image_modes_are_accepted(mode, store, tmp_path):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (8, 12), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)).convert(mode)
    ext = "jpg" if mode == "CMYK" else "png"
    img.save(tmp_path / f"m.{ext}")
    r = ingest(store, [tmp_path / f"m.{ext}"])
    assert r.added and not r.skipped
    row = _rows(store)[f"m.{ext}"]
    rgb = load_rgb(store.media_file(row.media_path))
    assert rgb.size == (12, 8) == (row.width, row.height)
    if mode == "I;16":
        assert np.asarray(rgb).std() > 10  # 16-bit range kept visible, not clipped to white


ODD_SHAPES = [  # (width, height): what the tool refuses, and the words of the reason
    ((1, 100000), "a side of 1 pixel(s) is under the minimum of 8"),
    ((100000, 1), "a side of 1 pixel(s) is under the minimum of 8"),
    ((2, 5000), "a side of 2 pixel(s) is under the minimum of 8"),
    ((7, 7), "a side of 7 pixel(s) is under the minimum of 8"),
    ((70000, 40), "a side of 70000 pixels is over the maximum of 32767"),
    ((161, 8), "20.1:1 is more elongated than the maximum of 20:1"),
    ((40, 1000), "25:1 is more elongated than the maximum of 20:1"),
]


@pytest.mark.parametrize("size, says", ODD_SHAPES)
def test_odd_shapes_are_refused_at_import_by_name_with_the_reason(store, tmp_path, size, says):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("L", size, 90).save(src / "odd.png")
    Image.new("L", (160, 8), 30).save(src / "strip.png")  # exactly 20:1, the smallest side allowed: accepted
    with zipfile.ZipFile(src / "pack.zip", "w") as zf:
        zf.write(src / "odd.png", "in/odd.png")
    report = ingest(store, [src])
    assert [n for _, n in report.added] == ["strip.png"]
    reasons = dict(report.skipped)
    assert set(reasons) == {str(src / "odd.png"), f"{src / 'pack.zip'}:in/odd.png"}
    assert all(r.startswith(f"{size[0]}x{size[1]}: ") and says in r for r in reasons.values()), reasons
    assert not [p for p in store.settings.media_dir.rglob("*") if p.is_file() and p.suffix == ".png"
                and Image.open(p).size == size]  # nothing of a refused file is stored


def test_the_shape_limits_are_settings(make_store, tmp_path):
    store = make_store(tmp_path / "s", min_side=2, max_aspect=3000, max_side=100_000)
    Image.new("L", (2, 5000), 1).save(tmp_path / "thin.png")
    Image.new("L", (1, 50), 1).save(tmp_path / "thinner.png")
    report = ingest(store, [tmp_path / "thin.png", tmp_path / "thinner.png"])
    assert [n for _, n in report.added] == ["thin.png"]
    assert "under the minimum of 2" in dict(report.skipped)[str(tmp_path / "thinner.png")]


def test_names_are_made_to_follow_the_one_rule_or_the_file_is_skipped_by_name(store, tmp_path):
    """import-images stored 'c:x.png' (after which every export with images was refused), 'dup.png' beside
    'dup.png/inner.png' (an --images-dir export crashed part-way) and case-only twins (one file on macOS and
    Windows): each now gets a name the export can always write, and a path over the store's 1000 characters
    (which PostgreSQL refused, losing the whole batch) is skipped by name while the rest goes in."""
    from db.coco_export import export
    from db.media import file_name_problem

    src = tmp_path / "src"
    deep = src / "/".join(["d" * 200] * 5)
    deep.mkdir(parents=True)
    (deep / "far.png").write_bytes(_png(np.full((8, 8, 3), 9, np.uint8)))
    for k, name in enumerate(["c:x.png", "a.png.", "Photo.png", "photo.png"]):
        (src / name).write_bytes(_png(np.full((8, 8, 3), 10 + k, np.uint8)))
    z = tmp_path / "pack.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("dup.png", _png(np.full((8, 8, 3), 20, np.uint8)))
        zf.writestr("dup.png/inner.png", _png(np.full((8, 8, 3), 21, np.uint8)))
        zf.writestr("d:2021-01-01T12:00:00.png", _png(np.full((8, 8, 3), 22, np.uint8)))  # (was "escapes its folder")
    r = ingest(store, [src, z], batch_size=2)
    names = sorted(n for _, n in r.added)
    assert len(names) == 7 and not [n for n in names if file_name_problem(n)]
    assert "c_x.png" in names and "a.png" in names and "Photo.png" in names and "dup.png" in names
    assert "d_2021-01-01T12:00:00.png" in names
    assert [n for n in names if n.startswith("photo_")] and [n for n in names if n.startswith("dup.png_")]
    assert [(n.rsplit("/", 1)[-1], why) for n, why in r.skipped] == [
        ("far.png", "its name is 1012 characters long, over the store's limit of 1000")]
    out = export(store, tmp_path / "out" / "o.json", images_dir=tmp_path / "out" / "images", all_images=True)
    assert out["images"] == 7 and len([p for p in (tmp_path / "out" / "images").rglob("*") if p.is_file()]) == 7
