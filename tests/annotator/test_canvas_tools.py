"""The Python side of the canvas's tools (issue 23): the magic wand's ``region`` message (checked strictly, then
applied like a stroke), a drawn polygon that stays a polygon, the keypoint tool's skeleton, and reject-the-rest
moving the selection off what it rejected. The browser side is in test_browser_tools.py."""

import math

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from annotator import canvas, skeleton
from annotator.labeling import LabelSession
from db.errors import UserError
from tests.annotator.pages import page_of
from tests.annotator.test_labeling import _busiest_image, proposed_store  # noqa: F401 - fixture


@pytest.fixture
def ls(proposed_store):
    return LabelSession(proposed_store, _busiest_image(proposed_store))


def region(m: np.ndarray, x0: int, y0: int, **more) -> dict:
    """A region message as canvas.js sends it: COCO compressed RLE (column-major) of the crop ``m`` at (x0, y0)."""
    rle = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"op": "region", "x0": x0, "y0": y0, "w": m.shape[1], "h": m.shape[0],
            "counts": rle["counts"].decode("ascii"), **more}


def test_a_region_adds_to_the_selected_mask_and_undo_takes_it_back(ls):
    before = ls.instances.mask(0).copy()
    square = np.ones((6, 9), bool)
    square[0, 0] = False
    msg = canvas.apply(page_of(ls), region(square, 2, 3, index=0))
    assert msg == "region of 53 px added"
    after = ls.instances.mask(0)
    assert (after[3:9, 2:11] | ~square).all() and (after | ~before).all()  # the region's pixels, and the old ones
    canvas.apply(page_of(ls), region(square, 2, 3, index=0, subtract=True))
    assert not ls.instances.mask(0)[3:9, 2:11][square].any()
    canvas.apply(page_of(ls), {"op": "undo"})
    canvas.apply(page_of(ls), {"op": "undo"})
    assert (ls.instances.mask(0) == before).all()


def test_a_region_with_nothing_selected_is_a_new_instance_of_the_chosen_class(ls):
    n, cid = len(ls.instances), next(iter(ls.categories))
    disc = np.hypot(*np.mgrid[-5:6, -5:6]) <= 5
    assert canvas.apply(page_of(ls), region(disc, 40, 50, category=cid)).startswith(f"new instance #{n}")
    full = np.zeros((ls.height, ls.width), bool)
    full[50:61, 40:51] = disc
    assert (ls.instances.mask(n) == full).all() and ls.instances.category_ids[n] == cid and ls.selected == n
    with pytest.raises(UserError, match="select an instance to subtract the region from"):
        canvas.apply(page_of(ls), region(disc, 40, 50, category=cid, subtract=True))


GOOD = region(np.ones((4, 4), bool), 1, 1, index=0)


@pytest.mark.parametrize("change, says", [
    ({"counts": "0"}, "run lengths sum to 0, not height\\*width = 16"),  # the counts do not fill the crop
    ({"counts": "5"}, "run lengths sum to 5"),
    ({"counts": "\x00\x01"}, "outside COCO's alphabet"),
    ({"counts": "é"}, "ASCII"),
    ({"counts": "X" * 200_001}, "counts is 200,001 characters long"),
    ({"counts": 16}, "counts 16 is not text"),
    ({"w": 5000, "h": 5000}, "w 5000 is not 1 to 2048"),
    ({"w": 2048, "h": 2048, "x0": 0}, "reaches outside the"),  # (the image is small)
    ({"w": 0}, "w 0 is not 1 to 2048"),
    ({"x0": math.nan}, "x0 nan is not an integer"),
    ({"y0": math.inf}, "y0 inf is not an integer"),
    ({"x0": -1}, "x0 -1 is not 0 to"),
    ({"x0": 1.5}, "x0 1.5 is not an integer"),
    ({"x0": 10_000}, "reaches outside the"),
    ({"subtract": "yes"}, "subtract 'yes' is not true or false"),
    ({"index": 99_999}, "no instance #99999|select an instance"),
    ({"counts": None}, "counts None is not text"),
])
def test_bad_region_messages_are_named_and_change_nothing(ls, change, says):
    before = {k: v for k, v in canvas.payload(page_of(ls)).items() if k != "rev"}
    with pytest.raises(UserError, match=says):
        canvas.apply(page_of(ls), {**GOOD, **change})
    assert {k: v for k, v in canvas.payload(page_of(ls)).items() if k != "rev"} == before and not ls.dirty


def test_a_region_larger_than_the_limit_is_refused_before_it_is_decoded(ls):
    assert canvas.MAX_REGION_PIXELS == 2048 * 2048
    with pytest.raises(UserError, match="over the limit|not 1 to 2048"):
        canvas.apply(page_of(ls), {**GOOD, "w": 2049, "h": 1})


def test_a_drawn_polygon_stays_a_polygon_whose_vertices_move(ls):
    cid = next(iter(ls.categories))
    canvas.apply(page_of(ls), {"op": "polygon", "points": [[10, 10], [40, 10], [40, 40], [-5, 40]], "mode": "new",
                               "category": cid})
    i = ls.selected
    sent = canvas.payload(page_of(ls))
    poly = next(it for it in sent["instances"] if it["i"] == i)["polygons"]
    assert poly == [[10, 10, 40, 10, 40, 40, 0, 40]]  # (a vertex outside the image is put on its edge)
    canvas.apply(page_of(ls), {"op": "vertex", "index": i, "part": 0, "vertex": 2, "x": 50, "y": 50})
    assert ls.instances.polygons(i) == [[10, 10, 40, 10, 50, 50, 0, 40]] and ls.instances.mask(i)[45, 45]
    canvas.apply(page_of(ls), {"op": "undo"})
    assert ls.instances.polygons(i) == [[10, 10, 40, 10, 40, 40, 0, 40]]


def test_rejecting_the_rest_moves_the_selection_off_a_rejected_instance(ls):
    assert ls.selected is not None and ls.instances.states[ls.selected] == "proposed"
    canvas.apply(page_of(ls), {"op": "reject_rest"})
    assert ls.selected is None and canvas.payload(page_of(ls))["selected"] is None
    with pytest.raises(UserError, match="select an instance"):  # the next eraser stroke edits nothing hidden
        canvas.apply(page_of(ls), {"op": "stroke", "points": [[5, 5]], "radius": 3, "erase": True})


def test_a_skeleton_dragged_with_the_keypoint_tool_is_laid_out_in_the_box(ls):
    person = next((c for c in ls.categories.values() if c.keypoints), None)
    if person is None:
        pytest.skip("the demo store has no category with keypoints")
    canvas.apply(page_of(ls), {"op": "class", "index": 0, "category": person.id})
    msg = canvas.apply(page_of(ls), {"op": "skeleton", "index": 0, "box": [20, 10, 60, 110]})
    k = ls.instances.keypoints[0]
    assert f"{len(person.keypoints)} keypoints placed" in msg and len(k) == 3 * len(person.keypoints)
    assert all(20 <= k[3 * j] <= 60 and 10 <= k[3 * j + 1] <= 110 and k[3 * j + 2] == 2
               for j in range(len(person.keypoints)))
    if "nose" in person.keypoints and "left_ankle" in person.keypoints:  # standing: the head above the feet
        nose, ankle = person.keypoints.index("nose"), person.keypoints.index("left_ankle")
        assert k[3 * nose + 1] < k[3 * ankle + 1]
    canvas.apply(page_of(ls), {"op": "undo"})
    assert ls.instances.keypoints[0] != k


def test_a_skeleton_template_follows_the_categorys_labeled_instances():
    names = ["head", "tail", "paw"]
    examples = [([0, 0, 10, 10], [1, 1, 2, 9, 9, 2, 0, 0, 0]), ([100, 100, 20, 20], [102, 102, 2, 118, 118, 1, 0, 0, 0])]
    got = skeleton.learned(examples, 3)
    assert got[0] == pytest.approx((0.1, 0.1)) and got[1] == pytest.approx((0.9, 0.9)) and got[2] is None
    spread = skeleton.default(names)
    assert len(set(spread)) == 3 and all(0 <= x <= 1 and 0 <= y <= 1 for x, y in spread)
    assert skeleton.placed([(0.5, 0.25)], [40, 20, 0, 100]) == [20.0, 40.0, 2]


def test_a_region_costs_its_login_edit_rate_in_proportion_to_its_crop():

    big, small = {"op": "region", "w": 2048, "h": 2048}, {"op": "region", "w": 10, "h": 10}
    assert canvas.cost(big) == pytest.approx(0.1 + 2048 * 2048 / 1e7) and canvas.cost(small) < 0.11
    assert canvas.cost({"op": "region", "w": "x", "h": True}) == 0.1  # (refused later, by name)


def test_a_box_partly_inside_the_mask_without_a_model_cuts_it_there_and_says_the_rest_cannot_grow(ls):
    x, y, w, h = ls.instances.bboxes[0]
    msg = canvas.apply(page_of(ls), {"op": "box", "index": 0, "box": [x, y, x + w / 2, y + h + 10]})
    assert "cut to the box where the box is inside it" in msg and "cannot grow without a model" in msg
    bx, by, bw, bh = ls.instances.bboxes[0]
    assert bx + bw <= x + w / 2 + 1 and by + bh <= y + h
