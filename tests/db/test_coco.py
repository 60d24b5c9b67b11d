import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from db import coco_export, masks
from db.coco_import import CocoRejected, import_coco
from db.stats import stats
from tests.helpers import uncompressed_rle


def _export_bytes(store, **kw) -> bytes:
    return coco_export.dumps(coco_export.build(store, **kw))


def _handmade(tmp_path: Path) -> tuple[dict, Path]:
    """A small COCO file with every shape of annotation the rules talk about."""
    d = tmp_path / "hand"
    d.mkdir()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(d / "a.png")
    Image.new("L", (20, 10), 7).save(d / "b.png")
    crowd = np.zeros((10, 20), bool)
    crowd[2:6, 3:9] = True
    counts = uncompressed_rle(crowd)["counts"]
    kps = [5.25, 6.5, 2] + [0, 0, 0] * 15 + [7.125, 8.75, 1]
    coco = {
        "info": {"description": "hand made", "year": 2026},
        "licenses": [{"id": 4, "name": "CC-BY"}],
        "images": [
            {"id": 17, "file_name": "a.png", "width": 40, "height": 30, "license": 4, "coco_url": "x"},
            {"id": 3, "file_name": "b.png", "width": 20, "height": 10},
        ],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person",
             "keypoints": [f"k{i}" for i in range(17)], "skeleton": [[1, 2], [16, 17]]},
            {"id": 42, "name": "blob", "supercategory": "thing"},
        ],
        "annotations": [
            {"id": 900, "image_id": 17, "category_id": 42, "iscrowd": 0, "area": 123.5,
             "bbox": [1, 2, 10, 8],
             "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10], [20, 20, 25, 20, 22, 28]]},
            {"id": 5, "image_id": 3, "category_id": 42, "iscrowd": 1, "area": 24, "bbox": [3, 2, 6, 4],
             "segmentation": {"size": [10, 20], "counts": counts}},
            {"id": 6, "image_id": 17, "category_id": 1, "iscrowd": 0, "area": 50.0, "bbox": [4.5, 5.5, 3, 4],
             "segmentation": [[4, 5, 9, 5, 9, 10, 4, 10]], "keypoints": kps, "num_keypoints": 2},
        ],
    }
    (d / "annotations.json").write_text(json.dumps(coco))
    return coco, d


def test_handmade_file_keeps_every_field_as_given(store, tmp_path):
    coco, d = _handmade(tmp_path)
    import_coco(store, d / "annotations.json", d)
    out = json.loads(_export_bytes(store))
    assert out["info"] == coco["info"] and out["licenses"] == coco["licenses"]
    assert out["images"] == sorted(coco["images"], key=lambda i: i["id"])
    assert out["categories"] == coco["categories"]
    by_id = {a["id"]: a for a in out["annotations"]}
    assert [a["id"] for a in out["annotations"]] == [5, 6, 900]
    for a in coco["annotations"]:
        b = by_id[a["id"]]
        for f in ("image_id", "category_id", "area", "bbox", "iscrowd"):
            assert b[f] == a[f] and type(b[f]) is type(a[f]), f
        if isinstance(a["segmentation"], list):
            assert b["segmentation"] == a["segmentation"]
        else:  # uncompressed RLE comes out compressed, counts a str, same pixels
            assert isinstance(b["segmentation"]["counts"], str)
            assert np.array_equal(masks.decode(b["segmentation"], 10, 20), masks.decode(a["segmentation"], 10, 20))
    assert by_id[6]["keypoints"] == coco["annotations"][2]["keypoints"]  # not truncated
    assert by_id[6]["num_keypoints"] == 2


def test_import_export_import_export_is_byte_identical(make_store, tmp_path, synth_dir):
    a = make_store(tmp_path / "a")
    import_coco(a, synth_dir / "annotations.json", synth_dir)
    first = tmp_path / "first.json"
    coco_export.export(a, first)
    b = make_store(tmp_path / "b")
    import_coco(b, first, synth_dir)
    second = tmp_path / "second.json"
    coco_export.export(b, second)
    assert first.read_bytes() == second.read_bytes()
    assert _export_bytes(a) == first.read_bytes()  # deterministic
    src = json.loads((synth_dir / "annotations.json").read_text())
    out = json.loads(first.read_bytes())
    for x, y in zip(src["annotations"], out["annotations"]):
        assert x == {k: y[k] for k in x}
        assert np.array_equal(masks.decode(x["segmentation"], 96, 96), masks.decode(y["segmentation"], 96, 96))


def test_export_loads_in_pycocotools_and_evaluates_to_ap_one(store, synth_dir, tmp_path):
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    out = tmp_path / "export.json"
    coco_export.export(store, out)
    gt = COCO(str(out))
    for ann in gt.dataset["annotations"]:
        m = gt.annToMask(ann)
        img = gt.imgs[ann["image_id"]]
        assert m.shape == (img["height"], img["width"]) and m.sum() == ann["area"]
    dets = [dict(a, score=1.0) for a in copy.deepcopy(gt.dataset["annotations"])]
    for iou_type in ("bbox", "segm", "keypoints"):
        dt = gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(gt, dt, iou_type)
        if iou_type == "keypoints":
            ev.params.catIds = [1]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0), iou_type


def test_polygon_and_rle_conversions_on_export(store, tmp_path):
    coco, d = _handmade(tmp_path)
    import_coco(store, d / "annotations.json", d)
    rle = {a["id"]: a for a in json.loads(_export_bytes(store, seg_format="rle"))["annotations"]}
    assert all(isinstance(a["segmentation"], dict) for a in rle.values())
    poly = {a["id"]: a for a in json.loads(_export_bytes(store, seg_format="polygons"))["annotations"]}
    assert isinstance(poly[5]["segmentation"], dict)  # crowd stays RLE
    assert isinstance(poly[900]["segmentation"], list)
    m1 = masks.decode(rle[900]["segmentation"], 30, 40)
    m2 = masks.decode(poly[900]["segmentation"], 30, 40)
    assert np.array_equal(m1, m2)


def test_proposals_only_with_flag_and_with_score(store, synth_dir, tmp_path):
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    st = stats(store)
    assert st.images_by_status["proposed"] == 12
    assert json.loads(_export_bytes(store))["annotations"] == []
    with_props = json.loads(_export_bytes(store, include_proposals=True))["annotations"]
    assert len(with_props) == sum(c["proposed"] for c in st.annotations_by_category.values())


def test_zip_export_holds_images_and_json(store, synth_dir, tmp_path):
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    out = tmp_path / "ds.zip"
    coco_export.export(store, out)
    with zipfile.ZipFile(out) as z:
        ds = json.loads(z.read("annotations.json"))
        for im in ds["images"]:
            with Image.open(io.BytesIO(z.read(f"images/{im['file_name']}"))) as pic:
                assert pic.size == (im["width"], im["height"])
    export_dir = tmp_path / "imgs"
    coco_export.export(store, tmp_path / "x.json", images_dir=export_dir)
    assert len(list(export_dir.iterdir())) == 12


# --- malformed files: each rejected whole, naming the id and the field -------------------------------

def _mutations():
    def bad_json(c, d):
        (d / "annotations.json").write_text("{not json")

    def missing_annotations(c, d):
        del c["annotations"]

    def missing_bbox(c, d):
        del c["annotations"][1]["bbox"]

    def bbox_wrong_type(c, d):
        c["annotations"][1]["bbox"] = "1,2,3,4"

    def width_wrong_type(c, d):
        c["images"][0]["width"] = "96"

    def dangling_image(c, d):
        c["annotations"][1]["image_id"] = 999

    def dangling_category(c, d):
        c["annotations"][1]["category_id"] = 77

    def duplicate_annotation_id(c, d):
        c["annotations"][2]["id"] = c["annotations"][1]["id"]

    def duplicate_image_id(c, d):
        c["images"][1]["id"] = c["images"][0]["id"]

    def duplicate_category_id(c, d):
        c["categories"][1]["id"] = c["categories"][0]["id"]

    def short_polygon(c, d):
        c["annotations"][1]["segmentation"] = [[1, 1, 5, 5]]

    def rle_size_wrong(c, d):
        c["annotations"][1]["segmentation"]["size"] = [95, 96]

    def missing_image_file(c, d):
        c["images"][0]["file_name"] = "nowhere.png"

    def keypoints_wrong_length(c, d):
        person = next(a for a in c["annotations"] if "keypoints" in a)
        person["keypoints"] = person["keypoints"][:-3]

    def category_id_zero(c, d):
        c["categories"][1]["id"] = 0

    return {k: v for k, v in locals().items()}


EXPECTED = {
    "bad_json": "not valid JSON",
    "missing_annotations": "field 'annotations': missing",
    "missing_bbox": "field 'bbox'",
    "bbox_wrong_type": "field 'bbox'",
    "width_wrong_type": "field 'width'",
    "dangling_image": "image id 999 is not in the file",
    "dangling_category": "category id 77 is not in the file",
    "duplicate_annotation_id": "duplicate annotation id",
    "duplicate_image_id": "duplicate image id",
    "duplicate_category_id": "duplicate category id",
    "short_polygon": "at least 3 are needed",
    "rle_size_wrong": "disagrees with its image",
    "missing_image_file": "'nowhere.png' not found",
    "keypoints_wrong_length": "field 'keypoints'",
    "category_id_zero": "field 'id'",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_malformed_file_is_rejected_whole(case, store, synth_dir, synth_coco, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for f in synth_dir.glob("*.png"):
        (d / f.name).write_bytes(f.read_bytes())
    c = copy.deepcopy(synth_coco)
    (d / "annotations.json").write_text(json.dumps(c))
    _mutations()[case](c, d)
    if case != "bad_json":
        (d / "annotations.json").write_text(json.dumps(c))
    with pytest.raises(CocoRejected) as e:
        import_coco(store, d / "annotations.json", d)
    assert EXPECTED[case] in str(e.value)
    ids = {"dangling_image": "annotation id 2", "missing_bbox": "annotation id 2",
           "rle_size_wrong": "annotation id 2", "duplicate_image_id": "image id 1"}
    if case in ids:
        assert ids[case] in str(e.value)
    st = stats(store)
    assert st.images == 0 and st.annotations_by_category == {}
    assert not any(p.is_file() for p in store.settings.media_dir.rglob("*"))


def test_conflicting_ids_with_store_are_refused_and_nothing_changes(store, synth_dir, tmp_path):
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    before = _export_bytes(store)
    with pytest.raises(CocoRejected, match="already in the store"):
        import_coco(store, synth_dir / "annotations.json", synth_dir)
    assert _export_bytes(store) == before


def test_export_writes_done_images_by_default_so_unlabeled_ones_are_no_false_negatives(store, synth_dir):
    from sqlalchemy import update

    from db.coco_export import build
    from db.schema import Annotation, Image

    import_coco(store, synth_dir / "annotations.json", synth_dir)
    with store.transaction() as s:
        s.execute(update(Image).where(Image.id == 2).values(status="in_review"))
        s.execute(update(Annotation).where(Annotation.image_id == 2).values(review_state="proposed", score=0.5))
        s.execute(update(Image).where(Image.id == 3).values(status="new"))
        s.execute(update(Annotation).where(Annotation.image_id == 3).values(review_state="accepted"))
    done = build(store)
    assert 2 not in {i["id"] for i in done["images"]} and 3 not in {i["id"] for i in done["images"]}
    assert not {a["image_id"] for a in done["annotations"]} & {2, 3}  # also image 3's accepted rows
    with_props = build(store, include_proposals=True)
    assert 2 in {i["id"] for i in with_props["images"]} and 3 not in {i["id"] for i in with_props["images"]}
    every = build(store, all_images=True)
    assert {2, 3} <= {i["id"] for i in every["images"]}
    assert len(every["images"]) == len(done["images"]) + 2


def test_import_report_says_new_and_merged_categories_and_which_info_is_kept(store, synth_dir, tmp_path):
    from db.coco_import import summary

    data = json.loads((synth_dir / "annotations.json").read_text())
    data["info"] = {"description": "first file"}
    (tmp_path / "first.json").write_text(json.dumps(data))
    first = summary(import_coco(store, tmp_path / "first.json", synth_dir))
    assert "new categor" in first and "merged" not in first and "COCO info" not in first
    data.update(info={"description": "second file"}, images=[], annotations=[])  # the same categories again
    (tmp_path / "second.json").write_text(json.dumps(data))
    second = summary(import_coco(store, tmp_path / "second.json", synth_dir))
    assert f"0 new categories, {len(data['categories'])} merged into existing ones (same id)" in second
    assert "keeps the COCO info of the first file imported" in second


def test_a_malformed_segmentation_is_named_in_the_import_report(store, synth_dir, tmp_path):
    data = json.loads((synth_dir / "annotations.json").read_text())
    data["annotations"][0]["segmentation"] = "oops"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(CocoRejected, match=f"annotation id {data['annotations'][0]['id']}.*segmentation"):
        import_coco(store, tmp_path / "bad.json", synth_dir)
