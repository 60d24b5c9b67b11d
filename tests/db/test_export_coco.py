"""COCO export exactness (db/coco_export.py): ``--polygons`` writes polygons only where they give back the
mask's very pixels (a mask with a hole stays RLE, named in the summary), ``area`` matches what is written,
and every annotation of a keypoint category has keypoints, so pycocotools evaluates the export as it is."""

import copy
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from db import coco_export, masks
from db.coco_import import import_coco
from tests.db.test_export_yolo import _ring, _two_blobs, yolo_store
from tests.helpers import uncompressed_rle


def _quiet_eval(gt, dt, iou_type: str) -> float:
    ev = COCOeval(gt, dt, iou_type)  # no catIds: every category of the file
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0]


def test_polygons_keep_rle_for_a_hole_and_say_which(store, tmp_path):
    """The ring (a square with a hole) traced as polygons had its hole filled (IoU 0.84 against its mask here)
    and kept the mask's area, not the polygon's; it stays RLE now. The two-part mask becomes two polygons,
    exactly."""
    yolo_store(store, tmp_path)
    r = coco_export.export(store, tmp_path / "p.json", seg_format="polygons")
    assert r["stayed_rle"] == 1
    assert r["notes"][0].startswith("1 mask(s) stayed RLE")
    assert "annotation 10 (its polygons would fill 100 pixel(s) the mask leaves out)" in r["notes"][1]
    by_id = {a["id"]: a for a in json.loads((tmp_path / "p.json").read_text())["annotations"]}
    assert isinstance(by_id[10]["segmentation"], dict)  # the hole
    assert isinstance(by_id[14]["segmentation"], dict)  # crowd, as in COCO
    assert len(by_id[15]["segmentation"]) == 2  # two parts, two polygons
    assert np.array_equal(masks.decode(by_id[15]["segmentation"], 50, 50), _two_blobs())
    assert np.array_equal(masks.decode(by_id[10]["segmentation"], 40, 60), _ring())


def test_area_matches_what_is_written_and_segm_ap_is_one_against_the_rle_export(store, synth_dir, tmp_path):
    """The synthetic people have arms across their bodies (holes): under --polygons their masks stay RLE and
    the rest become polygons; evaluated against the RLE export as detections, the polygons export gives AP 1."""
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    poly, rle = tmp_path / "poly.json", tmp_path / "rle.json"
    r = coco_export.export(store, poly, seg_format="polygons")
    coco_export.export(store, rle, seg_format="rle")
    assert r["stayed_rle"] == 3 and "annotation 1 (" in r["notes"][1]
    gt = COCO(str(poly))
    kinds = {type(a["segmentation"]).__name__ for a in gt.dataset["annotations"]}
    assert kinds == {"list", "dict"}
    for ann in gt.dataset["annotations"]:
        assert gt.annToMask(ann).sum() == ann["area"], ann["id"]  # the area is the written mask's
    dets = [dict(a, score=1.0) for a in json.loads(rle.read_text())["annotations"]]
    assert _quiet_eval(gt, gt.loadRes(dets), "segm") == pytest.approx(1.0)


def test_every_keypoint_annotation_has_keypoints_so_cocoeval_runs_without_cat_ids(store, make_store, tmp_path):
    """A person whose keypoints were never placed had no ``num_keypoints``: pycocotools' keypoint evaluation
    stopped on a KeyError, even with catIds. Now it has K unlabeled keypoints and num_keypoints 0 (and is
    ignored as ground truth, as COCO's own people without keypoints are)."""
    d = tmp_path / "kp"
    d.mkdir()
    Image.new("RGB", (60, 40)).save(d / "a.png")
    body = np.zeros((40, 60), bool)
    body[5:35, 10:25] = True
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
        "categories": [{"id": 90, "name": "person", "supercategory": "person",
                        "keypoints": [f"k{i}" for i in range(17)], "skeleton": [[1, 2]]}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 90, "iscrowd": 0, "bbox": [10, 5, 15, 30], "area": 450.0,
             "segmentation": uncompressed_rle(body), "keypoints": [15, 8, 2, 14, 7, 2, 17, 7, 1] + [0, 0, 0] * 14,
             "num_keypoints": 3},
            {"id": 2, "image_id": 1, "category_id": 90, "iscrowd": 0, "bbox": [40, 5, 10, 20], "area": 200.0,
             "segmentation": [[40, 5, 50, 5, 50, 25, 40, 25]]},
        ],
    }
    import_coco(store, coco, d)
    out = tmp_path / "kp.json"
    coco_export.export(store, out)
    ds = json.loads(out.read_text())
    second = next(a for a in ds["annotations"] if a["id"] == 2)
    assert second["keypoints"] == [0] * 51 and second["num_keypoints"] == 0
    gt = COCO(str(out))  # (17 keypoints: pycocotools' default OKS sigmas are COCO's 17)
    # the person without keypoints scores lower, so its unmatched detection ranks after the matched one
    dets = [dict(a, score=1.0 if a["num_keypoints"] else 0.5) for a in copy.deepcopy(ds["annotations"])]
    assert _quiet_eval(gt, gt.loadRes(dets), "keypoints") == pytest.approx(1.0)
    second_store = make_store(tmp_path / "second")  # the zeros import, and export again unchanged
    import_coco(second_store, out, d)
    assert coco_export.dumps(coco_export.build(second_store)) == out.read_bytes()
