"""Instances, the one per-image container (issue 8): filtering, concatenation, COCO round trip, derived
values computed in one place, undo snapshots."""

import numpy as np
import pytest

from db import masks
from db.instances import Instances


def _two() -> Instances:
    inst = Instances(20, 30)
    m = np.zeros((20, 30), bool)
    m[2:5, 3:9] = True
    inst.add(3, [0, 0, 0, 0], mask=m, score=0.9, source="model", state="proposed")
    inst.add(1, [1, 2, 10, 8], segmentation=[[1, 2, 11, 2, 11, 10, 1, 10]], keypoints=[5, 6, 2, 0, 0, 0],
             area=77.5, ann_id=12, extra={"license": 4})
    return inst


def test_derived_values_and_given_values():
    inst = _two()
    assert inst.bboxes[0] == [3.0, 2.0, 6.0, 3.0] and inst.area(0) == 18.0  # tight box, pixel area
    assert inst.area(1) == 77.5 and inst.bboxes[1] == [1, 2, 10, 8]  # as given
    assert inst.num_keypoints_of(1) == 1 and inst.num_keypoints_of(0) is None
    assert inst.keypoints_xyv(1).shape == (2, 3)
    assert inst.boxes().dtype == np.float64 and inst.boxes().shape == (2, 4)
    assert inst.tight_bbox(1) == [1.0, 2.0, 10.0, 8.0]


def test_filter_and_concatenate_keep_every_column():
    inst = _two()
    high = inst.take(inst.score_array() > 0.5)
    assert len(high) == 1 and high.category_ids == [3] and high.mask(0).sum() == 18
    both = Instances.cat([high, inst.take([1])])
    assert both.category_ids == [3, 1] and both.ann_ids == [None, 12] and both.extras[1] == {"license": 4}
    with pytest.raises(ValueError):
        Instances.cat([inst, Instances(5, 5)])


def test_coco_round_trip_keeps_numbers_as_given():
    inst = _two()
    dicts = inst.to_coco(7, with_score=True)
    assert list(dicts[1]) == ["id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd",
                              "keypoints", "num_keypoints", "license"]
    back = Instances.from_coco(dicts, 20, 30)
    assert back.to_coco(7, with_score=True) == dicts
    assert isinstance(dicts[0]["segmentation"]["counts"], str) and dicts[0]["score"] == 0.9


def test_edit_through_a_view_and_undo_with_a_snapshot():
    inst = _two()
    snap = inst.take([0])
    view = inst[0]
    m = view.mask.copy()
    m[10:15, 10:20] = True
    view.mask = m
    assert view.bbox == [3.0, 2.0, 17.0, 13.0] and view.area == 18 + 50
    view.state = "accepted"
    inst.put(0, snap)
    assert inst[0].state == "proposed" and inst.area(0) == 18.0
    assert masks.decode(inst.segmentations[0], 20, 30).sum() == 18
