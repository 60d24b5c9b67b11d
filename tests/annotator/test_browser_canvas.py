"""The labeling canvas in headless Chromium, driven with real mouse and keyboard events: strokes, the eraser,
polygon vertices, box assist, keypoints, zoom, undo, and the layout on a laptop screen. Labels are checked in
the store after saving, not only on the page."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from sqlalchemy import select

# the Chromium page fixture and helpers; importing them skips (or, in CI, fails) where Chromium is missing
from tests.annotator.test_browser import (ST, _open, canvas_state, drag, expect, idle, instance,  # noqa: F401
                                          key_over_canvas, message, page, to_screen)

pytestmark = [pytest.mark.browser, pytest.mark.model_only]  # not in the PostgreSQL pass: a model's data, tested elsewhere on it


def _saved(store, image_id: int, ann_id: int):
    from db.schema import Annotation

    with store.session() as s:
        return s.scalars(select(Annotation).where(Annotation.image_id == image_id, Annotation.id == ann_id)).one()


def _mask(seg, h: int, w: int) -> np.ndarray:
    from db import masks

    return masks.decode(seg, h, w)


def _fresh_image(store, used: set, accept=None) -> int:
    """An image not used by another test of this module: one still to label, or (with ``accept``) any image
    that ``accept`` accepts."""
    from db import annotations

    ids = annotations.queue(store) if accept is None else annotations.image_ids(store)
    image_id = next(i for i in ids if i not in used and (accept is None or accept(i)))
    used.add(image_id)
    return image_id


USED: set = set()


def _with_proposals(store, at_least: int = 1):
    """Which images still to label have at least that many proposals (the quickly trained model's vary
    with the machine's thread count: some images get none)."""
    from sqlalchemy import func, select

    from db import annotations
    from db.schema import Annotation

    with store.session() as s:
        many = set(s.scalars(select(Annotation.image_id).where(Annotation.review_state == "proposed")
                             .group_by(Annotation.image_id).having(func.count() >= at_least)))
    queue = set(annotations.queue(store))
    return lambda i: i in many and i in queue


def _start(page, url, store) -> int:
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    image_id = _fresh_image(store, USED, accept=_with_proposals(store))
    _open(page, image_id)
    return image_id


def test_brush_drag_adds_pixels_and_eraser_drag_removes_them(app_with_model, page):
    store, url, _ = app_with_model
    image_id = _start(page, url, store)
    sel = canvas_state(page, "S.selection.index")
    before = instance(page, sel)["area"]
    key_over_canvas(page, "b")
    drag(page, [(2, 64), (60, 64)])  # a stroke across the left half of the image
    idle(page)
    assert instance(page, sel)["area"] > before and instance(page, sel)["state"] == "accepted"
    key_over_canvas(page, "e")
    drag(page, [(2, 64), (30, 64)])
    idle(page)
    key_over_canvas(page, "R")  # reject the rest, then save: the store holds the stroke minus the erased part
    idle(page)
    key_over_canvas(page, "s")
    expect(message(page)).to_contain_text(f"saved image {image_id}: done")
    ann_id = _ann_id(store, image_id, sel)
    row = _saved(store, image_id, ann_id)
    m = _mask(row.segmentation, 128, 128)
    assert m[64, 40:58].all()  # painted
    assert not m[64, 4:28].any()  # erased
    assert row.review_state == "accepted" and row.area == m.sum()


def _ann_id(store, image_id: int, index: int) -> int:
    from annotator.labeling import LabelSession

    return LabelSession(store, image_id).instances.ann_ids[index]


def test_polygon_vertex_drag_moves_it_and_undo_restores(app_with_model, page):
    store, url, _ = app_with_model
    image_id = _start(page, url, store)
    key_over_canvas(page, "Escape")
    page.locator("#label-canvas .mlc-class").select_option("3")
    key_over_canvas(page, "g")
    for x, y in ((10, 10), (40, 10), (40, 40)):
        page.mouse.click(*to_screen(page, x, y))
    page.mouse.click(*to_screen(page, 10, 10))  # clicking the first vertex closes it
    idle(page)
    expect(message(page)).to_contain_text("new instance #")
    i = canvas_state(page, "S.selection.index")
    assert instance(page, i)["source"] == "human"
    # a polygon drawn here keeps its vertices as handles (it used to become a mask without any)
    assert instance(page, i)["polygons"] == [[10, 10, 40, 10, 40, 40]]
    poly = {"i": i}
    key_over_canvas(page, "v")
    drag(page, [(40, 40), (55, 58)])  # drag the third vertex
    idle(page)
    moved = instance(page, poly["i"])["polygons"][0]
    assert moved[4:6] == [55, 58] and moved[:4] == [10, 10, 40, 10]
    view_before = canvas_state(page, "S.view")
    page.mouse.move(*to_screen(page, 64, 64))
    page.mouse.wheel(0, -400)  # zoom in around the pointer: the view changes, the labels do not
    idle(page)
    view_after = canvas_state(page, "S.view")
    assert view_after["s"] > view_before["s"] * 1.5
    assert instance(page, poly["i"])["polygons"][0] == moved
    key_over_canvas(page, "z")  # undo the vertex move
    idle(page)
    assert instance(page, poly["i"])["polygons"][0] == [10, 10, 40, 10, 40, 40]
    key_over_canvas(page, "s")  # saved as the polygon it is
    expect(message(page)).to_contain_text("saved image")
    from annotator.labeling import LabelSession

    saved = LabelSession(store, image_id).instances
    assert [[10, 10, 40, 10, 40, 40]] in [saved.polygons(k) for k in range(len(saved))]


def test_keypoint_drag_moves_it_and_right_click_marks_it_occluded(app_with_model, page):
    store, url, _ = app_with_model
    image_id = _start(page, url, store)
    key_over_canvas(page, "Escape")
    page.locator("#label-canvas .mlc-class").select_option("1")  # person
    key_over_canvas(page, "b")
    drag(page, [(50, 50), (70, 70)])  # a new person from a brush stroke
    idle(page)
    i = canvas_state(page, "S.selection.index")
    key_over_canvas(page, "k")
    page.locator("#label-canvas .mlc-kp").select_option("left_eye")
    page.mouse.click(*to_screen(page, 60, 55))
    idle(page)
    key_over_canvas(page, "v")
    drag(page, [(60, 55), (66, 52)])
    idle(page)
    kps = instance(page, i)["keypoints"]
    assert kps[3:6] == [66, 52, 2]  # left_eye is the second COCO keypoint
    page.mouse.click(*to_screen(page, 66, 52), button="right")
    idle(page)
    assert instance(page, i)["keypoints"][5] == 1
    key_over_canvas(page, "s")
    expect(message(page)).to_contain_text(f"saved image {image_id}")
    from db.schema import Annotation

    with store.session() as s:
        row = s.scalars(select(Annotation).where(Annotation.image_id == image_id, Annotation.source == "human",
                                                 Annotation.category_id == 1)).one()
    assert row.keypoints[3:6] == [66, 52, 1] and row.num_keypoints == 1


def test_assist_box_drag_finds_the_object_drawn_in_the_image(app_with_model, page):
    """A rough box around a synthetic object: the tiny trained model's mask overlaps it (IoU >= 0.5)."""
    from db import annotations
    from model.synthetic import make_coco

    store, url, _ = app_with_model
    _, coco = make_coco(40, size=128, seed=7)  # the demo store's images and their true objects
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    ids = {n: i for i, n in names.items()}

    def objects(image_id: int) -> list[dict]:
        name = annotations.images(store, [image_id])[image_id].file_name
        return [a for a in coco["annotations"] if a["image_id"] == ids[name]]

    def apart(a, truths) -> bool:  # its box overlaps no other object's box
        x, y, w, h = a["bbox"]
        return all(min(x + w, o["bbox"][0] + o["bbox"][2]) <= max(x, o["bbox"][0]) or
                   min(y + h, o["bbox"][1] + o["bbox"][3]) <= max(y, o["bbox"][1]) for o in truths if o is not a)

    def shapes_apart(truths) -> list[dict]:  # discs (150 iterations of CPU training segment those best)
        return [a for a in truths if a["category_id"] == 3 and apart(a, truths)]

    image_id = _fresh_image(store, USED, lambda i: bool(shapes_apart(objects(i))))
    truths = objects(image_id)
    target = max(shapes_apart(truths), key=lambda a: a["area"])  # the largest disc standing apart
    _open(page, image_id)
    key_over_canvas(page, "Escape")
    page.locator("#label-canvas .mlc-class").select_option(str(target["category_id"]))  # the labeler's class
    page.locator("#label-canvas .mlc-score").evaluate(  # hide the proposals: only what assist finds shows
        "(el) => { el.value = '1'; el.dispatchEvent(new Event('input')); }")
    # the server hears of the threshold 300 ms later: its answer (with no message) must come before assist's,
    # or it blanks what assist said (a drag quicker than 300 ms failed this test)
    page.wait_for_function(f"{ST}.data.min_score === 1")
    x, y, w, h = target["bbox"]
    key_over_canvas(page, "x")
    drag(page, [(max(0, x - 3), max(0, y - 3)), (min(127, x + w + 3), min(127, y + h + 3))])
    idle(page)
    expect(message(page)).to_contain_text("assist found")
    found = instance(page, canvas_state(page, "S.selection.index"))
    assert found["source"] == "assist" and found["state"] == "proposed"
    m = found["mask"]
    crop = coco_mask.decode({"size": [m["h"], m["w"]], "counts": m["counts"].encode()}) > 0
    got = np.zeros((128, 128), bool)
    got[m["y"]:m["y"] + m["h"], m["x"]:m["x"] + m["w"]] = crop
    truth = _mask(target["segmentation"], 128, 128)
    iou = (got & truth).sum() / (got | truth).sum()
    assert iou >= 0.5, iou


def test_the_canvas_and_save_fit_a_laptop_screen(app_with_model, page):
    store, url, _ = app_with_model
    page.set_viewport_size({"width": 1440, "height": 900})
    try:
        page.goto(url)
        expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
        idle(page)
        canvas_box = page.locator("#label-canvas canvas").bounding_box()
        save = page.locator("#btn-save").bounding_box()
        assert canvas_box["y"] + canvas_box["height"] <= 900 and save["y"] + save["height"] <= 900
        assert canvas_box["height"] >= 400 and canvas_box["width"] >= 700  # the canvas takes the free space
    finally:
        page.set_viewport_size({"width": 1500, "height": 1200})


def test_quick_review_keys_each_review_the_next_instance(app_with_model, page):
    """Keys faster than the server answers: every press reviews one instance, none is lost or repeated."""
    store, url, _ = app_with_model
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    _open(page, _fresh_image(store, USED, accept=_with_proposals(store, 2)))
    todo = canvas_state(page, "S.data.instances.filter((it) => it.state === 'proposed').length")
    presses = min(5, todo)
    assert presses >= 2
    box = page.locator("#label-canvas canvas").bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    for _ in range(presses):
        page.keyboard.press("a", delay=5)
    idle(page)
    accepted = canvas_state(page, "S.data.instances.filter((it) => it.state === 'accepted').length")
    assert accepted == presses
    key_over_canvas(page, "z")  # one undo per review
    idle(page)
    assert canvas_state(page, "S.data.instances.filter((it) => it.state === 'accepted').length") == presses - 1


def test_a_gallery_thumbnail_opens_its_image_in_the_label_tab(app_with_model, page):
    from db import annotations

    store, url, _ = app_with_model
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    idle(page)
    page.get_by_role("tab", name="Dataset").click()
    thumbs = page.locator("#store-gallery img")
    expect(thumbs.nth(2)).to_be_visible()
    thumbs.nth(2).click()  # the third image of the first page: ids ascending
    third = annotations.image_ids(store)[2]
    expect(page.locator("#label-canvas .mlc-info")).to_contain_text(f"Image {third} ")
    expect(page.locator("#label-canvas canvas")).to_be_visible()


def test_after_opening_an_id_with_enter_the_review_keys_label_again(app_with_model, page):
    store, url, _ = app_with_model
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    image_id = _fresh_image(store, USED, accept=_with_proposals(store))
    page.wait_for_function(f"{ST} && {ST}.answerDrawnAt > 0")
    box = page.locator("#jump-id").get_by_role("textbox")
    box.fill(str(image_id))
    box.press("Enter")  # the keyboard way: the focus was left in the box, so `a` typed into it
    page.wait_for_function(f"{ST}.imageId === {image_id}")
    idle(page)
    sel = canvas_state(page, "S.selection.index")
    page.keyboard.press("a")
    idle(page)
    assert instance(page, sel)["state"] == "accepted" and box.input_value() == str(image_id)
