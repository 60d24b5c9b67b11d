"""Values that used to be accepted and then broke every later export, save or view (issue 7): each is now
refused at import, by id and field, and the store is left exactly as it was."""

import copy
import json
import math

import numpy as np
import pytest
from PIL import Image

from db import coco_export, masks
from db.coco_import import CocoRejected, import_coco
from db.ingest import ingest
from db.schema import Annotation, Image as ImageRow
from db.stats import stats
from tests.db.test_coco import _handmade


def _refused(store, coco, images_dir) -> str:
    before = coco_export.dumps(coco_export.build(store))
    with pytest.raises(CocoRejected) as e:
        import_coco(store, coco, images_dir)
    assert coco_export.dumps(coco_export.build(store)) == before  # nothing written, export still works
    assert not [p for p in (store.settings.media_dir).rglob("*") if p.is_file()]
    return str(e.value)


@pytest.mark.parametrize("where, path, value", [
    ("annotations", ("bbox", 2), math.nan),
    ("annotations", ("bbox", 0), math.inf),
    ("annotations", ("area",), -math.inf),
    ("annotations", ("keypoints", 0), math.nan),  # annotation 6 holds keypoints
    ("annotations", ("segmentation", 0, 3), math.nan),
    ("annotations", ("score",), math.nan),
    ("annotations", ("my_extra", "deep"), math.inf),
    ("images", ("my_extra",), math.nan),
])
def test_non_finite_numbers_are_refused_by_id_and_field(store, tmp_path, where, path, value):
    coco, d = _handmade(tmp_path)
    item = coco[where][-1] if where == "annotations" else coco[where][0]
    target = item
    for k in path[:-1]:
        target = target.setdefault(k, {}) if isinstance(k, str) else target[k]
    target[path[-1]] = value
    msg = _refused(store, coco, d)
    assert f"id {item['id']}" in msg and f"'{path[0]}'" in msg and "NaN or infinite" in msg


def test_nan_and_infinity_literals_in_the_file_text_are_refused(store, tmp_path):
    coco, d = _handmade(tmp_path)
    text = json.dumps(coco).replace('"area": 123.5', '"area": NaN').replace('"year": 2026', '"year": 1e999')
    (d / "annotations.json").write_text(text)
    msg = _refused(store, d / "annotations.json", d)
    assert "annotation id 900: field 'area'" in msg and "'info'" in msg


@pytest.mark.parametrize("value", [0, -1, 2 ** 63, 2 ** 63 - 1, 2 ** 53])
@pytest.mark.parametrize("kind", ["images", "annotations", "categories"])
def test_ids_outside_one_range_are_refused_by_name(store, tmp_path, kind, value):
    coco, d = _handmade(tmp_path)
    old = coco[kind][0]["id"]
    coco[kind][0]["id"] = value
    for a in coco["annotations"]:  # keep references consistent so the id itself is what is refused
        key = {"images": "image_id", "categories": "category_id"}.get(kind)
        if key and a[key] == old:
            a[key] = value
    msg = _refused(store, coco, d)
    assert f"{kind[:-1].replace('categorie', 'category')} id {value}: field 'id'" in msg
    assert "outside 1.." in msg


def test_largest_allowed_ids_leave_new_images_and_new_labels_working(store, tmp_path):
    from annotator.labeling import LabelSession

    coco, d = _handmade(tmp_path)
    big = 2 ** 53 - 1
    coco["annotations"][0]["id"] = big
    coco["images"][0]["id"] = big - 5
    for a in coco["annotations"]:
        if a["image_id"] == 17:
            a["image_id"] = big - 5
    import_coco(store, coco, d)
    Image.new("RGB", (9, 9), (1, 2, 3)).save(tmp_path / "new.png")
    report = ingest(store, [tmp_path / "new.png"])
    assert len(report.added) == 1 and not report.skipped
    ls = LabelSession(store, report.added[0][0])
    m = np.zeros((9, 9), bool)
    m[2:5, 2:5] = True
    ls.new_instance(42, mask=m)
    ls.save("alice")
    assert stats(store).images == 3


def test_num_keypoints_beyond_the_category_is_refused(store, tmp_path):
    coco, d = _handmade(tmp_path)
    coco["annotations"][2]["num_keypoints"] = 2 ** 63
    assert "annotation id 6: field 'num_keypoints'" in _refused(store, coco, d)


@pytest.mark.parametrize("counts", ["!!garbage!!", "ÿÿÿÿ", "0", "PP", "1O00"])
def test_invalid_compressed_rle_is_refused_by_id(store, tmp_path, counts):
    coco, d = _handmade(tmp_path)
    coco["annotations"][1]["segmentation"] = {"size": [10, 20], "counts": counts}
    msg = _refused(store, coco, d)
    assert "annotation id 5: field 'segmentation'" in msg


@pytest.mark.parametrize("with_area", [True, False])
def test_polygon_coordinates_far_outside_the_image_are_refused(store, tmp_path, with_area):
    coco, d = _handmade(tmp_path)
    a = coco["annotations"][0]
    a["segmentation"] = [[1, 2, 2 ** 63, 2, 11, 10]]
    if not with_area:
        del a["area"]
    msg = _refused(store, coco, d)
    assert "annotation id 900: field 'segmentation'" in msg and "coordinate" in msg


def test_keypoints_and_boxes_far_outside_the_image_are_refused(store, tmp_path):
    coco, d = _handmade(tmp_path)
    coco["annotations"][2]["keypoints"][0] = 1e12
    coco["annotations"][0]["bbox"] = [-1e9, 0, 1, 1]
    msg = _refused(store, coco, d)
    assert "annotation id 6: field 'keypoints'" in msg and "annotation id 900: field 'bbox'" in msg


def test_decoding_checks_rle_before_pycocotools_sees_it():
    with pytest.raises(masks.MaskError):
        masks.decode({"size": [4, 4], "counts": "o"}, 4, 4)
    with pytest.raises(masks.MaskError):  # runs summing past the mask would be written out of bounds
        masks.decode({"size": [2, 2], "counts": "0?"}, 2, 2)
    with pytest.raises(masks.MaskError):
        masks.decode([[0, 0, 2 ** 40, 0, 5, 5]], 10, 10)


def test_compressed_rle_decoder_agrees_with_pycocotools():
    rng = np.random.default_rng(3)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.random((h, w)) < rng.random()
        rle = masks.encode(m)
        runs = masks.rle_counts(rle["counts"])
        assert runs.sum() == h * w and (runs >= 0).all()
        assert masks.rle_problem(rle, h, w) is None
        assert np.array_equal(masks.decode(rle, h, w), m)


def test_the_database_itself_refuses_non_finite_values(store, tmp_path):
    coco, d = _handmade(tmp_path)
    import_coco(store, coco, d)
    for values in ({"score": math.nan}, {"bbox": [0, 0, math.inf, 1]}, {"area": math.nan}):
        with pytest.raises(Exception) as e, store.transaction() as s:
            s.query(Annotation).filter(Annotation.id == 900).update(values)
        assert "finite" in str(e.value) or "Out of range" in str(e.value)
    assert {a["id"]: a["bbox"] for a in coco_export.build(store)["annotations"]}[900] == [1, 2, 10, 8]


def test_image_ids_zero_and_negative_follow_the_category_rule(store, tmp_path):
    coco, d = _handmade(tmp_path)
    bad = copy.deepcopy(coco)
    bad["images"][1]["id"] = 0
    for a in bad["annotations"]:
        if a["image_id"] == 3:
            a["image_id"] = 0
    assert "image id 0: field 'id'" in _refused(store, bad, d)
    with store.session() as s:
        assert s.query(ImageRow).count() == 0


@pytest.mark.parametrize("name", ["/tmp/raw/a.png", "x/../../a.png", "./a.png", "a.png/", "a\u0000.png",
                                  "sub\\a.png", "a//b.png", "C:/a.png", "line\nbreak.png"])
def test_file_names_that_would_write_outside_an_export_are_refused(store, tmp_path, name):
    coco, d = _handmade(tmp_path)
    coco["images"][0]["file_name"] = name
    assert "image id 17: field 'file_name'" in _refused(store, coco, d)


def test_export_never_writes_outside_its_folder_for_a_stored_bad_name(store, tmp_path):
    from db.errors import UserError

    coco, d = _handmade(tmp_path)
    import_coco(store, coco, d)
    with store.transaction() as s:
        s.query(ImageRow).filter(ImageRow.id == 17).update({"file_name": "../../escaped.png"})
    for out, kw in ((tmp_path / "o.zip", {}), (tmp_path / "o.json", {"images_dir": tmp_path / "out" / "images"})):
        with pytest.raises(UserError, match="image 17: file_name"):
            coco_export.export(store, out, **kw)
        assert not out.exists()
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "out").exists()
    coco_export.export(store, tmp_path / "labels-only.json")  # annotations alone write no image files


@pytest.mark.parametrize("text, says", [
    ('"score": 1' + "0" * 400, "too large"),
    ('"area": 1' + "0" * 400, "too large"),
    ('"my_extra": ' + "[" * 100 + "]" * 100, "nested deeper"),
])
def test_numbers_too_large_and_nesting_too_deep_are_refused(store, tmp_path, text, says):
    coco, d = _handmade(tmp_path)
    raw = json.dumps(coco).replace('"area": 123.5', text)
    (d / "annotations.json").write_text(raw)
    msg = _refused(store, d / "annotations.json", d)
    assert "annotation id 900" in msg and says in msg


@pytest.mark.parametrize("raw", ['{"images": [' + "1" * 5000 + ']}', "[" * 5000 + "]" * 5000])
def test_files_json_cannot_read_are_refused_not_crashed(store, tmp_path, raw):
    (tmp_path / "bad.json").write_text(raw)
    with pytest.raises(CocoRejected, match="cannot be read"):
        import_coco(store, tmp_path / "bad.json", tmp_path)


def test_area_beyond_any_image_is_refused(store, tmp_path):
    coco, d = _handmade(tmp_path)
    coco["annotations"][0]["area"] = 2 ** 60
    assert "annotation id 900: field 'area'" in _refused(store, coco, d)


def test_a_zigzag_polygon_within_reach_but_with_an_endless_outline_is_refused(store, tmp_path):
    coco, d = _handmade(tmp_path)  # image 17 is 40x30: vertices may lie within +-160 x +-120
    zigzag = [v for k in range(2000) for v in ((-150, -100) if k % 2 else (150, 100))]
    coco["annotations"][0]["segmentation"] = [zigzag]
    del coco["annotations"][0]["area"]
    msg = _refused(store, coco, d)
    assert "annotation id 900: field 'segmentation'" in msg and "outline" in msg
    with pytest.raises(masks.MaskError, match="outline"):
        masks.decode([zigzag], 30, 40)
    checker = np.indices((30, 40)).sum(axis=0) % 2 == 0  # the longest honest outline: every pixel apart
    assert masks.polygon_problem(masks.mask_to_polygons(checker), 30, 40) is None


@pytest.mark.parametrize("width, height, says", [
    (1, 100000, "a side of 1 pixel(s) is under the minimum of 8"),
    (70000, 40, "a side of 70000 pixels is over the maximum of 32767"),
    (900, 30, "30:1 is more elongated than the maximum of 20:1"),
])
def test_an_image_of_a_shape_the_store_refuses_is_refused_by_id_before_its_file_is_read(store, tmp_path, width,
                                                                                         height, says):
    coco, d = _handmade(tmp_path)
    coco["images"].append({"id": 77, "file_name": "never_read.png", "width": width, "height": height})
    msg = _refused(store, coco, d)
    assert f"image id 77: field 'width/height': {width}x{height}: {says}" in msg
    assert "not found" not in msg  # refused on the sizes the file gives, before looking for the image


def test_an_odd_image_file_under_ordinary_sizes_is_refused_by_id(store, tmp_path):
    coco, d = _handmade(tmp_path)
    Image.new("RGB", (3, 300), (1, 2, 3)).save(d / "thin.png")
    coco["images"].append({"id": 78, "file_name": "thin.png", "width": 30, "height": 30})
    msg = _refused(store, coco, d)
    assert "image id 78: field 'file_name': 'thin.png': 3x300: a side of 3 pixel(s) is under the minimum" in msg


# --- issue 21: keypoint lists, the store's text limits, names that clash ---------------------------------------


def test_keypoints_are_checked_against_the_store_category_they_merge_into(store, tmp_path):
    """A file category merged into the store's (same id and name) keeps the store's keypoint list: a file that
    gives 'person' 1 keypoint (the store's has 17) or 'blob' 2 (it has none) is refused by id and field, its
    annotations too, and nothing is written."""
    from db import categories as cat_db

    coco, d = _handmade(tmp_path)
    import_coco(store, coco, d)
    second = {"images": [{"id": 50, "file_name": "c.png", "width": 40, "height": 30}],
              "categories": [{"id": 1, "name": "person", "keypoints": ["nose"]},
                             {"id": 42, "name": "blob", "keypoints": ["a", "b"]}],
              "annotations": [{"id": 60, "image_id": 50, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
                               "keypoints": [2, 2, 2]},
                              {"id": 61, "image_id": 50, "category_id": 42, "bbox": [1, 1, 5, 5], "area": 25,
                               "keypoints": [2, 2, 2, 3, 3, 2]}]}
    Image.new("RGB", (40, 30), (9, 9, 9)).save(d / "c.png")
    before = coco_export.dumps(coco_export.build(store))
    with pytest.raises(CocoRejected) as e:
        import_coco(store, second, d)
    msg = str(e.value)
    assert "category id 1: field 'keypoints': lists 1 keypoint(s) (nose); the store's 'person' lists 17" in msg
    assert "category id 42: field 'keypoints': lists 2 keypoint(s) (a, b); the store's 'blob' lists 0" in msg
    assert "annotation id 60: field 'keypoints': has 1 keypoints; category 1 ('person') lists 17" in msg
    assert "annotation id 61: field 'keypoints': has 2 keypoints; category 42 ('blob') lists 0" in msg
    assert coco_export.dumps(coco_export.build(store)) == before
    # the same file without keypoint lists on its categories: the annotations are still checked against the store's
    for c in second["categories"]:
        del c["keypoints"]
    msg = str(pytest.raises(CocoRejected, import_coco, store, second, d).value)
    assert "annotation id 60: field 'keypoints': has 1 keypoints; category 1 ('person') lists 17" in msg
    assert "category id 1" not in msg
    # fitting the store's list, it goes in, and its export imports again
    second["annotations"][0]["keypoints"] = [2, 2, 2] * 17
    del second["annotations"][1]["keypoints"]
    import_coco(store, second, d)
    assert {a["id"]: len(a.get("keypoints", [])) for a in coco_export.build(store)["annotations"]}[60] == 51
    assert [c.keypoints for c in cat_db.all_categories(store)][0] == [f"k{i}" for i in range(17)]


@pytest.mark.parametrize("where, value, says", [
    (("categories", 1, "name"), "n" * 300, "field 'name': 'nnn"),
    (("categories", 1, "supercategory"), "s" * 300, "field 'supercategory': 'sss"),
    (("categories", 1, "name"), "bl\x00ob", "field 'name': 'bl\\x00ob' holds a NUL character"),
    (("categories", 1, "supercategory"), "th\x00ing", "field 'supercategory': 'th\\x00ing' holds a NUL character"),
])
def test_texts_over_the_store_limits_are_refused_alike_on_every_database(store, tmp_path, where, value, says):
    """SQLite stored a 300-character category name or a NUL, where PostgreSQL failed with a DataError: the
    limits come from the schema's columns and are checked before anything is written, on both."""
    coco, d = _handmade(tmp_path)
    coco[where[0]][where[1]][where[2]] = value
    msg = _refused(store, coco, d)
    assert f"category id 42: {says}" in msg
    if len(value) == 300:
        assert "is 300 characters long, over the store's limit of 200" in msg


def test_a_lone_surrogate_anywhere_is_refused_by_id_and_field(store, tmp_path):
    """Python's json reader takes "\\ud800", which neither database stores as text and no UTF-8 export can
    hold (the export used to fail with UnicodeEncodeError)."""
    coco, d = _handmade(tmp_path)
    text = json.dumps(coco).replace('"name": "blob"', '"name": "bl\\ud800ob"').replace('"coco_url": "x"',
                                                                                      '"coco_url": "\\udfff"')
    (d / "annotations.json").write_text(text)
    msg = _refused(store, d / "annotations.json", d)
    assert "category id 42: field 'name'" in msg and "image id 17: field 'coco_url'" in msg
    assert "lone surrogate" in msg


def test_a_relative_path_over_the_store_limit_is_refused_by_id(store, tmp_path):
    coco, d = _handmade(tmp_path)
    coco["images"][0]["file_name"] = "/".join(["d" * 200] * 5) + "/a.png"  # 1006 characters
    msg = _refused(store, coco, d)
    assert "image id 17: field 'file_name'" in msg and "over the store's limit of 1000" in msg


@pytest.mark.parametrize("first, second, says", [
    ("dup.png", "dup.png/inner.png", "lies in a folder that is image id 17's file 'dup.png'"),
    ("dup.png/inner.png", "dup.png", "is a folder of image id 17's 'dup.png/inner.png'"),
    ("Photo.PNG", "photo.png", "the same file on a file system that ignores case"),
    ("caf\u00e9.png", "cafe\u0301.png", "the same file on a file system that ignores case or Unicode normalisation"),
])
def test_file_names_that_would_be_one_file_on_some_file_system_are_refused(store, tmp_path, first, second, says):
    """Names that an export cannot write side by side (a file and a folder of one name), or that unpack as one
    file on macOS or Windows, are refused by id, within a file and against the store."""
    coco, d = _handmade(tmp_path)
    coco["images"][0]["file_name"], coco["images"][1]["file_name"] = first, second
    msg = _refused(store, coco, d)
    assert "image id 3: field 'file_name'" in msg and says in msg and "image id 17's" in msg
    # against the store: the first image is in, the second comes in another file (from another folder)
    for name, im, src in ((first, coco["images"][0], d / "a.png"), (second, coco["images"][1], d / "b.png")):
        folder = tmp_path / name.replace("/", "_")
        (folder / name).parent.mkdir(parents=True)
        src.rename(folder / name)
        part = {**coco, "images": [{**im, "file_name": name}],
                "annotations": [a for a in coco["annotations"] if a["image_id"] == im["id"]]}
        if name == first:
            import_coco(store, part, folder)
        else:
            msg = str(pytest.raises(CocoRejected, import_coco, store, part, folder).value)
    assert "image id 3: field 'file_name'" in msg and says in msg and "image id 17's" in msg and "in the store" in msg


def test_names_that_are_two_files_everywhere_both_go_in(store, tmp_path):
    """Case is folded as file systems fold it, one character at a time: 'straße' and 'strasse' are two files on
    macOS and Windows too."""
    coco, d = _handmade(tmp_path)
    (d / "a.png").rename(d / "straße.png")
    (d / "b.png").rename(d / "strasse.png")
    coco["images"][0]["file_name"], coco["images"][1]["file_name"] = "straße.png", "strasse.png"
    assert import_coco(store, coco, d)["images"] == 2


@pytest.mark.parametrize("name, says", [
    ("c:x.png", "is an absolute path"),
    ("a.png.", "ending in '.'"),
    ("folder /a.png", "ending in ' '"),
    ("x" * 252 + "\u00e9.png", "over the 255 bytes"),
    ("a\u0085.png", "control character"),
])
def test_names_no_export_could_write_everywhere_are_refused(store, tmp_path, name, says):
    coco, d = _handmade(tmp_path)
    coco["images"][0]["file_name"] = name
    msg = _refused(store, coco, d)
    assert "image id 17: field 'file_name'" in msg and says in msg
