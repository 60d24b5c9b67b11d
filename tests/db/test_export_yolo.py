"""YOLO export (db/yolo_export.py): Ultralytics' layout, classes 0..n-1 mapped from COCO ids in id order,
polygons that rasterize back to the masks (holes and parts joined by zero-width bridges), pose lines, what is
left out named, and the same safety as the COCO export (nothing half-written, no link followed, names that
cannot escape the folder)."""

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from db import annotations, masks, yolo_export
from db.coco_import import import_coco
from db.errors import UserError
from db.schema import Category, Image as ImageRow
from tests.helpers import uncompressed_rle

H, W = 40, 60


def _ring() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[5:30, 10:35] = True
    m[12:22, 17:27] = False  # the hole
    return m


def _two_blobs() -> np.ndarray:
    m = np.zeros((50, 50), bool)
    m[3:10, 4:12] = True
    m[30:45, 33:47] = True
    return m


def _crowd() -> np.ndarray:
    m = np.zeros((50, 50), bool)
    m[20:28, 2:20] = True
    return m


def yolo_store(store, tmp_path: Path) -> dict:
    """A store with the shapes the YOLO export must handle: a mask with a hole, a two-part polygon object,
    a two-part mask, a crowd region, a keypoint category (id 90) among ids 3 and 7, a person without keypoints,
    and images named with spaces, unicode and the same stem in two folders. Returns its COCO dict."""
    d = tmp_path / "yolo_src"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir()
    Image.new("RGB", (W, H), (10, 20, 30)).save(d / "a" / "photo 1.png")
    Image.new("RGB", (W, H), (30, 20, 10)).save(d / "b" / "photo 1.png")
    Image.new("RGB", (50, 50), (90, 90, 90)).save(d / "ünï cödé.jpg", "JPEG")
    person = np.zeros((H, W), bool)
    person[8:36, 20:32] = True
    coco = {
        "images": [{"id": 1, "file_name": "a/photo 1.png", "width": W, "height": H},
                   {"id": 2, "file_name": "b/photo 1.png", "width": W, "height": H},
                   {"id": 3, "file_name": "ünï cödé.jpg", "width": 50, "height": 50}],
        "categories": [{"id": 90, "name": "person", "supercategory": "person",
                        "keypoints": ["nose", "left_eye", "right_eye"], "skeleton": [[1, 2], [1, 3]]},
                       {"id": 3, "name": "ring", "supercategory": "shape"},
                       {"id": 7, "name": "blob: thing", "supercategory": "shape"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [10, 5, 25, 25],
             "area": float(_ring().sum()), "segmentation": uncompressed_rle(_ring())},
            {"id": 11, "image_id": 1, "category_id": 7, "iscrowd": 0, "bbox": [2, 2, 48, 28], "area": 136.0,
             "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8], [40, 20, 50, 20, 50, 30, 40, 30]]},
            {"id": 12, "image_id": 2, "category_id": 90, "iscrowd": 0, "bbox": [20, 8, 12, 28],
             "area": float(person.sum()), "segmentation": uncompressed_rle(person),
             "keypoints": [26.5, 10.25, 2, 0, 0, 0, 28, 12, 1], "num_keypoints": 2},
            {"id": 13, "image_id": 2, "category_id": 90, "iscrowd": 0, "bbox": [40, 2, 10, 10], "area": 100.0,
             "segmentation": [[40, 2, 50, 2, 50, 12, 40, 12]]},
            {"id": 14, "image_id": 3, "category_id": 3, "iscrowd": 1, "bbox": [2, 20, 18, 8],
             "area": float(_crowd().sum()), "segmentation": uncompressed_rle(_crowd())},
            {"id": 15, "image_id": 3, "category_id": 7, "iscrowd": 0, "bbox": [4, 3, 43, 42],
             "area": float(_two_blobs().sum()), "segmentation": uncompressed_rle(_two_blobs())},
        ],
    }
    import_coco(store, coco, d)
    return coco


def read_labels(root: Path) -> dict[str, list[list[float]]]:
    """labels/*.txt parsed: file stem -> lines as lists of numbers."""
    out = {}
    for f in sorted((root / "labels").iterdir()):
        out[f.stem] = [[float(v) for v in line.split()] for line in f.read_text("ascii").splitlines()]
    return out


def parse_yaml(text: str) -> dict:
    yaml = pytest.importorskip("yaml")  # (PyYAML is no dependency of maskloop; tests read data.yaml with it when present)
    return yaml.safe_load(text)


def _expected_mask(coco: dict, ann_id: int) -> np.ndarray:
    a = next(a for a in coco["annotations"] if a["id"] == ann_id)
    im = next(i for i in coco["images"] if i["id"] == a["image_id"])
    return masks.decode(a["segmentation"], im["height"], im["width"])


def test_seg_export_layout_classes_and_polygons_that_give_back_the_masks(store, tmp_path):
    coco = yolo_store(store, tmp_path)
    out = tmp_path / "yolo"
    r = yolo_export.export(store, out)
    assert r["task"] == "seg" and r["images"] == 3 and r["classes"] == 3 and r["objects"] == 5
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["1_a_photo_1.png", "2_b_photo_1.png", "3_ünï_cödé.jpg"]  # one stem in two folders: two names
    labels = read_labels(out)
    assert sorted(labels) == ["1_a_photo_1", "2_b_photo_1", "3_ünï_cödé"]

    data = parse_yaml((out / "data.yaml").read_text("utf-8"))
    assert data["names"] == {0: "ring", 1: "blob: thing", 2: "person"}  # COCO ids 3, 7, 90 in id order
    assert data["path"] == str(out.resolve())
    text = (out / "data.yaml").read_text("utf-8")
    assert '0: "ring"  # COCO category id 3' in text and '2: "person"  # COCO category id 90' in text
    images = {1: "1_a_photo_1", 2: "2_b_photo_1", 3: "3_ünï_cödé"}
    if (out / "train.txt").exists():  # the store's held-out split when both halves have images, else every image
        listed = (out / "train.txt").read_text("utf-8").split() + (out / "val.txt").read_text("utf-8").split()
        assert sorted(listed) == sorted(f"./images/{n}" for n in names)
        assert (data["train"], data["val"]) == ("train.txt", "val.txt")
    else:
        assert (data["train"], data["val"]) == ("images", "images")
        assert not any(annotations.is_heldout(i) for i in images) or all(annotations.is_heldout(i) for i in images)

    # every line: a class and an even number of coordinates in [0, 1] that rasterize back to the mask. The
    # coordinates are pixel corners written to 6 decimals (under 1e-4 px here), far below pycocotools' raster
    # grid of 1/5 px, so the masks come back exactly (IoU 1); 0.99 would still allow a pixel or two on the
    # bigger objects if a rasterizer rounded a vertex the other way.
    sizes = {1: (H, W), 2: (H, W), 3: (50, 50)}
    want = {1: [(0, 10), (1, 11)], 2: [(2, 12), (2, 13)], 3: [(1, 15)]}  # (class, annotation) per image, by id
    for image_id, stem in images.items():
        h, w = sizes[image_id]
        lines = labels[stem]
        assert [int(v[0]) for v in lines] == [c for c, _ in want[image_id]]
        for line, (_, ann_id) in zip(lines, want[image_id]):
            xy = line[1:]
            assert len(xy) % 2 == 0 and len(xy) >= 6 and 0 <= min(xy) and max(xy) <= 1
            poly = [v * (w if k % 2 == 0 else h) for k, v in enumerate(xy)]
            got = masks.decode([poly], h, w)
            expected = _expected_mask(coco, ann_id)
            assert masks.iou(got, expected) >= 0.99, ann_id
            assert np.array_equal(got, expected), ann_id  # the hole stays a hole, both parts are there
    assert any("crowd region" in n and "annotation 14" in n for n in r["notes"])  # left out, and said so


def test_pose_export_writes_boxes_keypoints_and_flip_idx_and_names_what_it_left_out(store, tmp_path):
    yolo_store(store, tmp_path)
    out = tmp_path / "pose"
    r = yolo_export.export(store, out, task="pose")
    assert r["task"] == "pose" and r["classes"] == 1 and r["objects"] == 2
    data = parse_yaml((out / "data.yaml").read_text("utf-8"))
    assert data["names"] == {0: "person"} and data["kpt_shape"] == [3, 3] and data["flip_idx"] == [0, 2, 1]
    lines = read_labels(out)["2_b_photo_1"]
    first, second = lines
    assert first[:5] == pytest.approx([0, 26 / W, 22 / H, 12 / W, 28 / H])  # the mask's box, centre and size
    assert first[5:] == pytest.approx([26.5 / W, 10.25 / H, 2, 0, 0, 0, 28 / W, 12 / H, 1])
    assert second[5:] == [0] * 9  # a person without keypoints: three unlabeled ones
    assert read_labels(out)["1_a_photo_1"] == []  # only other categories there: an empty label file
    assert any("category without keypoints" in n and "annotation 10, 11" in n for n in r["notes"])
    # auto is seg here (ring and blob have no keypoints); a store of keypoint categories only exports as pose
    assert yolo_export.plan_classes(yolo_export.out_files.categories(store), "auto")[0] == "seg"


def test_flip_idx_only_when_every_side_has_its_partner():
    assert yolo_export.flip_index(["nose", "Left Eye", "Right Eye"]) == ([0, 2, 1], "")
    assert yolo_export.flip_index(["nose", "left_eye"])[0] is None
    assert yolo_export.flip_index(["tip", "base"])[0] is None


def test_zip_holds_the_same_files_and_two_exports_are_byte_identical(store, tmp_path):
    yolo_store(store, tmp_path)
    folder = tmp_path / "yolo"
    yolo_export.export(store, folder)
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    yolo_export.export(store, a)
    yolo_export.export(store, b)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as z:
        inside = {n: z.read(n) for n in z.namelist()}
    on_disk = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert sorted(inside) == sorted(on_disk)
    assert {n: v for n, v in inside.items() if n != "data.yaml"} == {n: v for n, v in on_disk.items()
                                                                      if n != "data.yaml"}
    assert b"\npath:  # empty" in inside["data.yaml"]  # unzipped anywhere: the folder data.yaml is in
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_bad_output_places_are_refused_by_name_and_nothing_is_written(store, tmp_path):
    yolo_store(store, tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files already"):
        yolo_export.export(store, full)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        yolo_export.export(store, a_file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "link")
    with pytest.raises(UserError, match="is a symbolic link"):
        yolo_export.export(store, tmp_path / "link")
    assert not list(elsewhere.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    yolo_export.export(store, empty)  # an empty folder is fine
    assert (empty / "data.yaml").is_file()
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize("name", ["two\nlines", "tab\there"])
def test_a_category_name_data_yaml_cannot_hold_is_refused_by_name(store, tmp_path, name):
    yolo_store(store, tmp_path)
    with store.transaction() as s:
        s.query(Category).filter(Category.id == 7).update({"name": name})
    with pytest.raises(UserError) as e:
        yolo_export.export(store, tmp_path / "out")
    assert f"category 7 {name!r}" in str(e.value) and "nothing was written" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_an_export_that_fails_half_way_leaves_nothing(store, tmp_path, monkeypatch):
    yolo_store(store, tmp_path)
    real = store.media_file
    calls = []

    def media_file(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(path)

    monkeypatch.setattr(store, "media_file", media_file)
    for out in (tmp_path / "out", tmp_path / "out.zip"):
        calls.clear()
        with pytest.raises(OSError, match="disk gone"):
            yolo_export.export(store, out)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "yolo_src"]  # no temporary folder or zip left


def test_stored_names_cannot_escape_the_folder_or_collide(store, tmp_path):
    """Names an older version let in ('../..', a file and a folder of one name) all become plain (no leading dot),
    distinct names inside images/ and labels/."""
    yolo_store(store, tmp_path)
    with store.transaction() as s:
        s.query(ImageRow).filter(ImageRow.id == 1).update({"file_name": "../../evil.png"})
        s.query(ImageRow).filter(ImageRow.id == 2).update({"file_name": "dup.png/inner.png"})
        s.query(ImageRow).filter(ImageRow.id == 3).update({"file_name": "dup.png"})
    out = tmp_path / "out"
    yolo_export.export(store, out)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
                   and "store" not in p.parts and "yolo_src" not in p.parts)
    assert files == ["out/data.yaml", "out/images/1__.._evil.png", "out/images/2_dup.png_inner.png",
                     "out/images/3_dup.jpg", "out/labels/1__.._evil.txt", "out/labels/2_dup.png_inner.txt",
                     "out/labels/3_dup.txt"] + (["out/train.txt", "out/val.txt"] if (out / "train.txt").exists()
                                                else [])


def test_one_polygon_bridges_parts_so_an_even_odd_fill_gives_them_back():
    m = np.zeros((30, 30), bool)
    m[2:10, 2:10] = True
    m[4:6, 4:6] = False
    m[15:28, 12:29] = True
    m[20, 20] = False  # a one-pixel hole
    m[28:30, 0:2] = True  # a corner part
    rings = [p for p, _ in masks.mask_to_rings(m)]
    assert len(rings) == 5
    assert np.array_equal(masks.decode([yolo_export.one_polygon(rings)], 30, 30), m)
    assert json.dumps(yolo_export.one_polygon([[1, 1, 3, 1, 3, 3]])) == "[1, 1, 3, 1, 3, 3]"


def test_synthetic_store_every_mask_comes_back_and_the_split_is_the_stores(store, synth_dir, tmp_path):
    """12 synthetic images (people with arms over their bodies: holes and parts): every label line rasterizes
    to its annotation's very mask, and train.txt / val.txt are the store's fixed held-out split."""
    coco = json.loads((synth_dir / "annotations.json").read_text())
    import_coco(store, coco, synth_dir)
    out = tmp_path / "synth"
    r = yolo_export.export(store, out)
    assert r["objects"] == len(coco["annotations"]) and r["left_out"] == 0
    labels = read_labels(out)
    for im in coco["images"]:
        anns = sorted((a for a in coco["annotations"] if a["image_id"] == im["id"]), key=lambda a: a["id"])
        lines = labels[f"{im['id']}_{im['file_name'].rsplit('.', 1)[0]}"]
        assert len(lines) == len(anns)
        for line, a in zip(lines, anns):
            poly = [v * (im["width"] if k % 2 == 0 else im["height"]) for k, v in enumerate(line[1:])]
            assert np.array_equal(masks.decode([poly], im["height"], im["width"]),
                                  masks.decode(a["segmentation"], im["height"], im["width"])), a["id"]
    val = (out / "val.txt").read_text("utf-8").split()
    assert sorted(val) == sorted(f"./images/{i['id']}_{i['file_name']}" for i in coco["images"]
                                 if annotations.is_heldout(i["id"]))
    assert len(val) + len((out / "train.txt").read_text("utf-8").split()) == 12
