"""The canvas's Python side: the data the browser draws from, and every edit message it sends, applied
through the labeling logic (the browser itself is driven in test_browser_canvas.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from annotator import canvas
from annotator.labeling import LabelSession
from db import annotations
from db.errors import UserError
from tests.annotator.pages import page_of
from tests.annotator.test_labeling import _busiest_image, _rows, proposed_store  # noqa: F401 - fixture


@pytest.fixture
def ls(proposed_store):
    return LabelSession(proposed_store, _busiest_image(proposed_store))


def _crop_mask(m: dict, h: int, w: int) -> np.ndarray:
    """What canvas.js rebuilds from one instance's crop RLE, at full size."""
    crop = coco_mask.decode({"size": [m["h"], m["w"]], "counts": m["counts"].encode()})
    full = np.zeros((h, w), bool)
    full[m["y"]:m["y"] + m["h"], m["x"]:m["x"] + m["w"]] = crop > 0
    return full


def test_payload_carries_each_mask_as_a_crop_that_decodes_to_the_full_mask(ls):
    page_of(ls).seq = 7
    data = canvas.payload(page_of(ls), message="hello")
    assert data["seq"] == 7 and data["message"] == "hello" and data["image_id"] == ls.image_id
    assert len(data["instances"]) == len(ls.instances)
    for d in data["instances"]:
        assert np.array_equal(_crop_mask(d["mask"], ls.height, ls.width), ls.instances[d["i"]].mask)
        assert d["color"].startswith("#") and len(d["color"]) == 7
    assert data["unreviewed"] == len(ls.instances) and data["selected"] == ls.selected
    ls.delete(0)
    assert [d["i"] for d in canvas.payload(page_of(ls))["instances"]] == list(range(1, len(ls.instances)))


def test_opening_selects_the_best_unreviewed_and_a_r_move_to_the_next(ls):
    scores = ls.instances.scores
    best = max(range(len(ls.instances)), key=lambda i: (scores[i], -i))
    assert ls.selected == best
    msg = canvas.apply(page_of(ls), {"op": "accept", "index": best})
    assert ls.instances[best].state == "accepted" and ls.selected != best and "next: #" in msg
    nxt = ls.selected
    canvas.apply(page_of(ls), {"op": "reject", "index": nxt})
    assert ls.instances[nxt].state == "rejected"
    while ls.selected is not None:  # one key per instance
        canvas.apply(page_of(ls), {"op": "accept", "index": ls.selected})
    assert ls.unreviewed() == 0


def test_save_leaves_unseen_proposals_as_they_are_until_the_rest_is_rejected(ls, proposed_store):
    canvas.apply(page_of(ls), {"op": "accept", "index": ls.selected})
    left = ls.save("alice")
    assert left == len(ls.instances) - 1 and ls.status == "in_review"
    rows = _rows(proposed_store, ls.image_id)
    assert sorted(r.review_state for r in rows).count("proposed") == left
    assert all(r.reviewed_by != "alice" for r in rows if r.review_state == "proposed")  # nobody reviewed them
    assert "rejected" in canvas.apply(page_of(ls), {"op": "reject_rest"})
    assert ls.save("alice") == 0 and ls.status == "done"
    assert {r.review_state for r in _rows(proposed_store, ls.image_id)} == {"accepted", "rejected"}


def test_discard_goes_back_to_what_was_saved(ls):
    before = [m.copy() for m in (ls.instances.mask(i) for i in range(len(ls.instances)))]
    canvas.apply(page_of(ls), {"op": "stroke", "points": [[1, 1], [30, 30]], "radius": 3, "index": 0})
    canvas.apply(page_of(ls), {"op": "delete", "index": 1})
    ls.discard()
    assert not ls.dirty and len(ls.instances) == len(before)
    assert all(np.array_equal(ls.instances.mask(i), m) for i, m in enumerate(before))


def test_brush_and_eraser_strokes_change_the_mask_at_full_resolution(ls):
    m0 = ls.instances.mask(0).copy()
    canvas.apply(page_of(ls), {"op": "stroke", "points": [[2, 2], [20, 2]], "radius": 1.5, "index": 0})
    m1 = ls.instances.mask(0)
    assert m1[2, 2:21].all() and (m1 | m0).sum() == m1.sum() > m0.sum()
    canvas.apply(page_of(ls), {"op": "stroke", "points": [[2, 2], [20, 2]], "radius": 1.5, "index": 0, "erase": True})
    assert not ls.instances.mask(0)[2, 2:21].any()
    assert ls.instances[0].state == "accepted" and ls.instances[0].edited  # correcting accepts
    n = len(ls.instances)
    cid = ls.instances.category_ids[0]
    msg = canvas.apply(page_of(ls), {"op": "stroke", "points": [[50, 50]], "radius": 4, "index": None, "category": cid})
    assert msg == f"new instance #{n}" and ls.selected == n and ls.instances.mask(n)[50, 50]
    with pytest.raises(UserError, match="choose the class"):
        canvas.apply(page_of(ls), {"op": "stroke", "points": [[50, 50]], "radius": 4, "index": None, "category": None})
    assert canvas.apply(page_of(ls), {"op": "undo"}) == "" and len(ls.instances) == n


def test_polygons_add_subtract_or_make_a_new_instance_and_their_vertices_move(ls, proposed_store):
    square = [[10, 10], [40, 10], [40, 40], [10, 40]]
    cid = ls.instances.category_ids[0]
    canvas.apply(page_of(ls), {"op": "polygon", "points": square, "mode": "new", "category": cid})
    i = ls.selected
    assert ls.instances.mask(i)[20, 20] and ls.instances.mask(i).sum() >= 30 * 30
    canvas.apply(page_of(ls), {"op": "polygon", "points": [[10, 10], [25, 10], [25, 40], [10, 40]], "mode": "subtract",
                      "index": i})
    assert not ls.instances.mask(i)[20, 15] and ls.instances.mask(i)[20, 35]
    # a polygon annotation: its vertices come to the canvas, and a moved vertex keeps it a polygon
    ls.instances.set_polygons(0, [[10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]])
    data = canvas.payload(page_of(ls))
    assert data["instances"][0]["polygons"] == [[10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]]
    assert data["instances"][1]["polygons"] is None  # an RLE mask has no vertices to drag
    canvas.apply(page_of(ls), {"op": "vertex", "index": 0, "part": 0, "vertex": 2, "x": 60, "y": 60})
    assert ls.instances.polygons(0) == [[10.0, 10.0, 40.0, 10.0, 60.0, 60.0, 10.0, 40.0]]
    assert ls.instances.mask(0)[50, 50] and ls.instances.bboxes[0][2] > 45
    with pytest.raises(UserError, match="no vertex 9"):
        canvas.apply(page_of(ls), {"op": "vertex", "index": 0, "part": 0, "vertex": 9, "x": 1, "y": 1})
    with pytest.raises(UserError, match="not a polygon"):
        canvas.apply(page_of(ls), {"op": "vertex", "index": 1, "part": 0, "vertex": 0, "x": 1, "y": 1})
    ls.reject_rest()
    ls.save("alice")
    saved = [r for r in _rows(proposed_store, ls.image_id) if r.id == ls.instances.ann_ids[0]][0]
    assert saved.segmentation == [[10.0, 10.0, 40.0, 10.0, 60.0, 60.0, 10.0, 40.0]]


def test_box_keypoint_and_class_messages(ls):
    x, y, w, h = ls.instances.bboxes[0]
    canvas.apply(page_of(ls), {"op": "box", "index": 0, "box": [x, y, x + w / 2, y + h / 2]})
    bx, by, bw, bh = ls.instances.bboxes[0]
    assert bw <= w / 2 + 1 and bh <= h / 2 + 1
    person = next((c for c in ls.categories.values() if c.keypoints), None)
    if person is not None:
        canvas.apply(page_of(ls), {"op": "class", "index": 0, "category": person.id})
        name = person.keypoints[0]
        canvas.apply(page_of(ls), {"op": "keypoint", "index": 0, "name": name, "x": 12.5, "y": 30, "v": 2})
        assert ls.instances.keypoints[0][:3] == [12.5, 30.0, 2]
        canvas.apply(page_of(ls), {"op": "keypoint", "index": 0, "name": name, "x": 12.5, "y": 30, "v": 1})
        assert ls.instances.keypoints[0][2] == 1
        with pytest.raises(UserError, match="no keypoint 'tail'"):
            canvas.apply(page_of(ls), {"op": "keypoint", "index": 0, "name": "tail", "x": 1, "y": 1, "v": 2})


@pytest.mark.parametrize("msg, says", [
    ({"op": "explode"}, "unknown canvas action 'explode'"),
    ("accept", "unknown canvas action"),
    ({"op": "stroke", "points": [[float("nan"), 1]], "radius": 3, "index": 0}, "finite number"),
    ({"op": "stroke", "points": [[1, 1]], "radius": float("inf"), "index": 0}, "radius inf is not a finite"),
    ({"op": "stroke", "points": [[1, 1]] * 20001, "radius": 3, "index": 0}, "1 to 20000 points"),
    ({"op": "stroke", "points": "1,1", "radius": 3, "index": 0}, "list of 1 to"),
    ({"op": "accept", "index": 10 ** 30}, "no instance #1000000000000000000000000000000"),
    ({"op": "keypoint", "index": 0, "name": "nose", "x": 1, "y": 1, "v": 3}, "v 3 is not 0 to 2"),
    ({"op": "stroke", "points": [[1, 1]], "radius": 3, "index": 0, "erase": "yes"}, "erase 'yes' is not true or false"),
    ({"op": "approve", "note": "x" * 10_001}, "note is 10,001 characters long"),
    ({"op": "accept", "index": True}, "is not an integer"),
    ({"op": "accept", "index": float("inf")}, "is not an integer"),
    ({"op": "accept", "index": float("nan")}, "is not an integer"),
    ({"op": "box", "index": 0, "box": [1, 2, 3]}, r"box must be \[x0, y0, x1, y1\]"),
    ({"op": "box", "index": 0, "box": [5, 5, 5, 5]}, "the box is empty"),
    ({"op": "polygon", "points": [[1, 1], [2, 2]], "mode": "add", "index": 0}, "at least 3 points"),
    ({"op": "polygon", "points": [[1, 1], [9, 2], [3, 9]], "mode": "xor", "index": 0}, "'xor' is not new"),
    ({"op": "keypoint", "index": 0, "name": 7, "x": 1, "y": 1, "v": 2}, "name 7 is not text"),
    ({"op": "select", "index": 99999}, "no instance #99999"),
    ({"op": "view", "min_score": "high"}, "min_score 'high' is not a finite number"),
    ({"op": "assist", "box": [1, 1, 9, 9]}, "not available"),
    ({"op": "reapply", "item": 7}, "no refused edit #7: none are left"),
    ({"op": "drop_mine", "item": "7"}, "item '7' is not an integer"),
    ({"op": "drop_mine"}, "item None is not an integer"),
    ({"op": "reapply_all"}, "no refused edit to re-apply"),
    ({"op": "drop_all"}, "no refused edits to drop"),
    ({"op": ["accept"], "index": 0}, "unknown canvas action"),
    ({"op": "stroke", "points": [[1e12, 1e12]], "radius": 5, "index": 0}, "changed no pixel .*outside the image"),
    ({"op": "stroke", "points": [[-50, 2], [-40, 3]], "radius": 3, "index": 0, "erase": True}, "changed no pixel"),
])
def test_bad_messages_are_named_and_change_nothing(ls, msg, says):
    before = {k: v for k, v in canvas.payload(page_of(ls)).items() if k != "rev"}
    with pytest.raises(UserError, match=says):
        canvas.apply(page_of(ls), msg)
    assert {k: v for k, v in canvas.payload(page_of(ls)).items() if k != "rev"} == before


def test_assist_answers_become_a_selected_instance_and_a_moved_box_asks_again(ls):
    calls = []
    cid = ls.instances.category_ids[0]
    other = next(c for c in ls.categories if c != cid)
    rle = coco_mask.encode(np.asfortranarray(np.pad(np.ones((10, 10), np.uint8), ((20, ls.height - 30), (20, ls.width - 30)))))

    def answer(box):
        return {"category_id": cid, "score": 0.4, "bbox": [20, 20, 10, 10],
                "segmentation": {"size": [ls.height, ls.width], "counts": rle["counts"].decode()}, "keypoints": None,
                "model_version_id": 7}

    helper = SimpleNamespace(assist_box=lambda image_id, box, c=None: calls.append(("box", box, c)) or answer(box),
                             assist_point=lambda image_id, x, y, c=None: calls.append(("point", x, y, c)) or answer(None))
    n = len(ls.instances)
    msg = canvas.apply(page_of(ls), {"op": "assist", "box": [15, 15, 35, 35], "category": None}, helper)
    assert "assist found" in msg and ls.selected == n and ls.instances[n].source == "assist"
    assert ls.instances.model_version_ids[n] == 7 and ls.instances.extras[n] is None  # made by, not an extra field
    canvas.apply(page_of(ls), {"op": "box", "index": n, "box": [10, 10, 40, 40]}, helper)  # handles dragged: asked again
    assert calls[-1] == ("box", [10.0, 10.0, 40.0, 40.0], cid) and len(ls.instances) == n + 1  # its class kept
    assert ls.instances[n].source == "assist" and ls.instances[n].state == "proposed"
    canvas.apply(page_of(ls), {"op": "assist_point", "x": 25, "y": 25, "category": cid}, helper)
    assert calls[-1] == ("point", 25.0, 25.0, cid) and len(ls.instances) == n + 2
    canvas.apply(page_of(ls), {"op": "accept", "index": n})
    canvas.apply(page_of(ls), {"op": "box", "index": n, "box": [20, 20, 25, 25]}, helper)  # accepted: a plain box edit
    assert len(calls) == 3 and ls.instances.bboxes[n] == [20.0, 20.0, 5.0, 5.0]
    canvas.apply(page_of(ls), {"op": "class", "index": n, "category": other})  # the person's class, then outward:
    msg = canvas.apply(page_of(ls), {"op": "box", "index": n, "box": [15, 15, 35, 35]}, helper)  # the model is asked
    assert calls[-1] == ("box", [15.0, 15.0, 35.0, 35.0], other) and "its mask is replaced" in msg
    assert ls.instances.bboxes[n] == [20.0, 20.0, 10.0, 10.0] and ls.instances.category_ids[n] == other
    canvas.apply(page_of(ls), {"op": "undo"})
    assert ls.instances.bboxes[n] == [20.0, 20.0, 5.0, 5.0]


def test_a_box_reaching_outside_the_mask_without_a_model_is_refused_and_changes_nothing(ls):
    x, y, w, h = ls.instances.bboxes[0]
    before = ls.instances.segmentations[0]
    with pytest.raises(UserError, match="cannot grow the mask by itself"):
        canvas.apply(page_of(ls), {"op": "box", "index": 0, "box": [x, y, x + w + 5, y + h]})
    assert ls.instances.segmentations[0] == before and not ls.dirty


def test_edits_that_would_leave_a_mask_empty_are_refused(ls):
    x, y, w, h = ls.instances.bboxes[0]
    far = [0, 0, 1, 1] if x > 2 and y > 2 else [126, 126, 127, 127]
    with pytest.raises(UserError, match="that box would leave the mask empty"):
        canvas.apply(page_of(ls), {"op": "box", "index": 0, "box": far})
    whole = [[x + w / 2, y + h / 2]]
    with pytest.raises(UserError, match="erasing would leave the mask empty"):
        canvas.apply(page_of(ls), {"op": "stroke", "points": whole, "radius": 200, "index": 0, "erase": True})
    ls.instances.set_polygons(0, [[10.0, 10.0, 40.0, 10.0, 40.0, 40.0]])
    with pytest.raises(UserError, match="moving that vertex would leave the mask empty"):
        canvas.apply(page_of(ls), {"op": "vertex", "index": 0, "part": 0, "vertex": 2, "x": 70, "y": 10})  # all in a line
    assert not ls.dirty and ls.instances.polygons(0) == [[10.0, 10.0, 40.0, 10.0, 40.0, 40.0]]


def test_the_label_tab_names_an_impossible_image_id_and_keeps_the_open_image(ls):
    from annotator.label_tab import LabelTab

    tab = LabelTab(ls.store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    for bad in (10 ** 20, 0, -3):
        out, data = tab.open(bad, page_of(ls))
        assert out is page_of(ls) and out.session is ls and f"no image with id {bad}" in data["message"]
    out_ls, data = tab.open(ls.image_id, None)
    assert data["selected"] == ls.selected  # opening selects the best unreviewed proposal, not the second


def test_a_canvas_edit_that_fails_on_the_server_is_answered_with_a_message(ls, monkeypatch):
    from annotator.label_tab import LabelTab

    tab = LabelTab(ls.store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    ls2, data = tab.open(ls.image_id, None)
    monkeypatch.setattr(canvas, "apply", lambda *a: 1 / 0)
    got = tab.canvas_edit({"token": data["token"], "op": "select", "index": 0, "seq": 5})
    assert "that edit failed on the server" in got["message"] and got["seq"] == 5
    assert "gone" in tab.canvas_edit({"token": "forged", "op": "select", "index": 0})["message"]


def test_saving_from_the_canvas_records_the_pages_login(ls, proposed_store):
    from annotator.label_tab import LabelTab

    tab = LabelTab(ls.store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    _, data = tab.open(ls.image_id, None, request=SimpleNamespace(username="alice", session_hash="x"))
    token = data["token"]
    tab.canvas_edit({"token": token, "op": "accept", "index": data["selected"], "seq": 1})
    got = tab.canvas_edit({"token": token, "op": "save", "seq": 2})
    assert got["message"].startswith(f"saved image {ls.image_id};") and "not reviewed yet" in got["message"]
    assert [r.reviewed_by for r in _rows(proposed_store, ls.image_id) if r.review_state == "accepted"] == ["alice"]


def test_previous_returns_to_the_image_this_page_came_from(proposed_store):
    from annotator.label_tab import LabelTab

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    order = annotations.queue(proposed_store)
    page, _ = tab.open(order[2], None)
    page, _ = tab.open(order[0], page)
    page, _ = tab.step(annotations.QUEUE_FILTERS[0], page, +1)
    assert page.session.image_id == order[1]
    page, _ = tab.step(annotations.QUEUE_FILTERS[0], page, -1)  # back, not the queue's neighbour
    assert page.session.image_id == order[0]
    page, _ = tab.step(annotations.QUEUE_FILTERS[0], page, -1)
    assert page.session.image_id == order[2]


def test_an_empty_store_points_to_the_dataset_tab(store):
    from annotator.label_tab import LabelTab

    tab = LabelTab(store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    assert "import some in the Dataset tab" in tab.open(None, None)[1]["message"]


def test_a_category_added_meanwhile_reaches_the_class_list(ls):
    from annotator.label_tab import LabelTab
    from db import categories

    tab = LabelTab(ls.store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    _, data = tab.open(ls.image_id, None)
    new = categories.add(ls.store, "kite", "thing", [], [])
    got = tab.canvas_edit({"token": data["token"], "op": "view", "seq": 1})
    assert got["categories"][str(new)]["name"] == "kite"
    i = got["selected"]
    got = tab.canvas_edit({"token": data["token"], "op": "class", "index": i, "category": new, "seq": 2})
    assert got["instances"][[d["i"] for d in got["instances"]].index(i)]["category_id"] == new



def test_previous_from_the_first_image_goes_to_the_image_saved_last(proposed_store):
    from annotator.label_tab import LabelTab

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    order = annotations.queue(proposed_store)
    first, _ = tab.open(order[0], None)
    first.trail = []  # a page that came through no other image
    page, answer = tab.step(annotations.QUEUE_FILTERS[0], first, -1)
    assert page.session.image_id == order[0] and answer["message"] == "This is the first image in this queue."
    saved = LabelSession(proposed_store, order[3])
    canvas.apply(page_of(saved), {"op": "accept_all"})
    saved.save("alice")  # done: out of the queue, which still starts at order[0]
    assert annotations.queue(proposed_store)[0] == order[0]
    page, answer = tab.step(annotations.QUEUE_FILTERS[0], first, -1)
    assert page.session.image_id == order[3] and "This was the first image in this queue" in answer["message"]
