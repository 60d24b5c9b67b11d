"""Export under attack (issue 21): links inside ``--images-dir`` are never followed, and an export that cannot
write every image writes nothing (all names are checked first)."""

import os

import pytest

from db import coco_export, export
from db.coco_import import import_coco
from db.errors import UserError
from db.schema import Image as ImageRow
from tests.db.test_coco import _handmade


def _two_images(store, tmp_path):
    """The hand-made file with image 3 moved into a folder: 'a.png' and 'sub/b.png'."""
    coco, d = _handmade(tmp_path)
    (d / "sub").mkdir()
    (d / "b.png").rename(d / "sub" / "b.png")
    coco["images"][1]["file_name"] = "sub/b.png"
    import_coco(store, coco, d)
    return coco


def test_a_link_inside_the_images_dir_is_refused_by_name_and_nothing_outside_changes(store, tmp_path):
    """A symbolic link at an image's place, or as one of its folders, pointed the export at a file outside
    the folder, which it overwrote."""
    _two_images(store, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    outside = tmp_path / "outside"
    outside.mkdir()
    images = tmp_path / "out" / "images"
    images.mkdir(parents=True)
    os.symlink(victim, images / "a.png")
    os.symlink(outside, images / "sub")
    with pytest.raises(UserError) as e:
        coco_export.export(store, tmp_path / "out" / "o.json", images_dir=images)
    msg = str(e.value)
    assert "image 17: file_name 'a.png' meets the symbolic link" in msg and "image 3: file_name 'sub/b.png'" in msg
    assert victim.read_text() == "keep me" and not list(outside.iterdir())
    assert not (tmp_path / "out" / "o.json").exists()  # nothing written, the annotations neither
    (images / "a.png").unlink()
    (images / "sub").unlink()
    coco_export.export(store, tmp_path / "out" / "o.json", images_dir=images)
    assert (images / "a.png").stat().st_size > 0 and (images / "sub" / "b.png").is_file()


def test_a_link_put_in_the_way_after_the_check_is_not_followed(store, tmp_path):
    """Between the check and the write someone puts links in: a linked folder stops the export, and a link
    (or a hard link) at the file's place is replaced, never written through."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"image bytes")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    root = tmp_path / "images"
    (root / "real").mkdir(parents=True)
    os.symlink(tmp_path, root / "sub")
    with pytest.raises(UserError, match="'sub' is not a folder here"):
        export.write_under(root, "sub/victim.txt", src)
    os.symlink(victim, root / "a.png")
    os.link(victim, root / "real" / "hard.png")
    export.write_under(root, "a.png", src)
    export.write_under(root, "real/hard.png", src)
    assert victim.read_text() == "keep me"
    assert not (root / "a.png").is_symlink() and (root / "a.png").read_bytes() == b"image bytes"
    assert (root / "real" / "hard.png").read_bytes() == b"image bytes"
    assert sorted(p.name for p in root.rglob("*")) == ["a.png", "hard.png", "real", "sub"]  # no temporary file left


def test_names_that_clash_from_an_older_store_are_refused_before_anything_is_written(store, tmp_path):
    """'dup.png' beside 'dup.png/inner.png' (stored before the import checked names) crashed an --images-dir
    export part-way with FileExistsError; now every name is checked first, the clash is named, and nothing of
    the export is written (the zip neither: it would not unpack)."""
    _two_images(store, tmp_path)
    with store.transaction() as s:
        s.query(ImageRow).filter(ImageRow.id == 3).update({"file_name": "dup.png/inner.png"})
        s.query(ImageRow).filter(ImageRow.id == 17).update({"file_name": "dup.png"})
    for out, kw in ((tmp_path / "o.zip", {}), (tmp_path / "o.json", {"images_dir": tmp_path / "images"})):
        with pytest.raises(UserError) as e:
            coco_export.export(store, out, **kw)
        assert "image 17: file_name 'dup.png' is a folder of image id 3's 'dup.png/inner.png'" in str(e.value)
        assert not out.exists()
    assert not (tmp_path / "images").exists()


def test_an_export_into_its_own_folder_again_replaces_the_files(store, tmp_path):
    _two_images(store, tmp_path)
    images = tmp_path / "images"
    for _ in range(2):
        coco_export.export(store, tmp_path / "o.json", images_dir=images)
    assert sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()) == ["a.png",
                                                                                                 "sub/b.png"]
