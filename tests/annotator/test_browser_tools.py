"""The canvas's tools and keys in headless Chromium (issue 23): the one keymap (the canvas handles exactly its
actions), the magic wand on a flat-coloured shape (checked in the store after saving), number keys for the
class, the keypoint tool's stepping and skeleton, keys after a slider or the id field, reject-the-rest moving
the selection, Backspace, and a box handle dragged outward."""

import json

import numpy as np
import pytest
from PIL import Image

# the Chromium page fixture and helpers; importing them skips (or, in CI, fails) where Chromium is missing
from tests.annotator.test_browser import (ST, _open, canvas_state, drag, expect, idle, instance,  # noqa: F401
                                          key_over_canvas, message, page, to_screen)
from tests.annotator.test_browser_canvas import _fresh_image, _mask, _with_proposals

USED: set = set()  # the images these tests opened (those of other modules may be opened again: only proposals count)

pytestmark = [pytest.mark.browser, pytest.mark.model_only]


def _start(page, url, store, at_least: int = 1) -> int:
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    image_id = _fresh_image(store, USED, accept=_with_proposals(store, at_least))
    _open(page, image_id)
    return image_id


def test_the_canvas_handles_exactly_the_actions_of_the_one_keymap(app_with_model, page):
    from annotator import keymap

    store, url, _ = app_with_model
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    page.wait_for_function(f"{ST} && {ST}.keymap")
    got = canvas_state(page, "S.keymap")
    assert got["unhandled"] == [] and got["unbound"] == [] and got["tools"] == keymap.tools()
    tools = page.locator("#label-canvas [data-tool]")
    assert tools.count() == len(keymap.tools()) and "magic wand" in tools.nth(keymap.tools().index("wand")).get_attribute("title")


SIZE = 128
BACK, SHAPE, HOLE = (40, 40, 40), (230, 140, 20), (30, 90, 220)


def _flat_image(store, tmp) -> tuple[int, np.ndarray, np.ndarray]:
    """A picture of a flat orange disc with a blue square in it on a flat grey ground, imported into the store
    (no labels); returns its id, the disc's mask and the square's."""
    from db import annotations
    from db.coco_import import import_coco
    from model.synthetic import CATEGORIES

    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (xx - 60) ** 2 + (yy - 64) ** 2 <= 30 ** 2
    square = (xx >= 55) & (xx < 67) & (yy >= 58) & (yy < 70)
    pix = np.zeros((SIZE, SIZE, 3), np.uint8)
    pix[:] = BACK
    pix[disc] = SHAPE
    pix[square] = HOLE
    Image.fromarray(pix).save(tmp / "flat.png")
    coco = {"images": [{"id": 900_001, "file_name": "flat.png", "width": SIZE, "height": SIZE}], "annotations": [],
            "categories": json.loads(json.dumps(CATEGORIES))}
    import_coco(store, coco, tmp)
    image_id = next(i for i, r in annotations.images(store, annotations.image_ids(store)).items()
                    if r.file_name == "flat.png")
    USED.add(image_id)
    return image_id, disc, square


def test_the_magic_wand_labels_a_flat_coloured_shape(app_with_model, page, tmp_path):
    from annotator.labeling import LabelSession

    store, url, _ = app_with_model
    image_id, disc, square = _flat_image(store, tmp_path)
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    _open(page, image_id)
    key_over_canvas(page, "Escape")
    key_over_canvas(page, "2")  # the second class of the menu (disc, id 3) for the new instance
    expect(page.locator("#label-canvas .mlc-class")).to_have_value("3")
    key_over_canvas(page, "w")
    page.mouse.click(*to_screen(page, 40.5, 64.5))  # on the orange: the region is shown, nothing is sent yet
    page.wait_for_function(f"{ST}.gesture.wand && {ST}.gesture.wand.area > 0")
    assert canvas_state(page, "S.gesture.wand.area") == int((disc & ~square).sum())
    assert canvas_state(page, "S.queue.seq") == canvas_state(page, "S.data.seq")
    key_over_canvas(page, "]")  # the wand's own key: a higher tolerance, the region grown again (the same flat shape)
    page.wait_for_function(f"{ST}.gesture.wand && {ST}.gesture.wand.tol === 28")
    assert canvas_state(page, "S.gesture.wand.area") == int((disc & ~square).sum())
    assert page.locator("#label-canvas .mlc-tol").input_value() == "28"
    key_over_canvas(page, "Enter")  # applied: one region message, a new disc
    idle(page)
    expect(message(page)).to_contain_text("new instance #")
    i = canvas_state(page, "S.selection.index")
    assert instance(page, i)["category_id"] == 3 and instance(page, i)["area"] == (disc & ~square).sum()
    page.mouse.click(*to_screen(page, 60.5, 63.5))  # the blue square: shown, then a click inside it adds it
    page.wait_for_function(f"{ST}.gesture.wand && {ST}.gesture.wand.area === {int(square.sum())}")
    page.mouse.click(*to_screen(page, 61.5, 64.5))
    idle(page)
    assert instance(page, i)["area"] == disc.sum()
    page.keyboard.down("Alt")  # with Alt, the square is taken out again
    page.mouse.click(*to_screen(page, 60.5, 63.5))
    page.wait_for_function(f"{ST}.gesture.wand && {ST}.gesture.wand.area === {int(square.sum())}")
    page.mouse.click(*to_screen(page, 61.5, 64.5))
    page.keyboard.up("Alt")
    idle(page)
    expect(message(page)).to_contain_text("subtracted")
    key_over_canvas(page, "3")  # the selected instance's class: the third of the menu (triangle, 5), then back
    idle(page)
    assert instance(page, i)["category_id"] == 5
    key_over_canvas(page, "2")
    idle(page)
    key_over_canvas(page, "s")
    expect(message(page)).to_contain_text(f"saved image {image_id}")
    saved = LabelSession(store, image_id).instances
    assert len(saved) == 1 and saved.category_ids[0] == 3
    assert (_mask(saved.segmentations[0], SIZE, SIZE) == (disc & ~square)).all()  # exactly the shape's pixels


def test_the_keypoint_tool_steps_to_the_next_missing_point_and_lays_out_a_skeleton(app_with_model, page):
    store, url, _ = app_with_model
    _start(page, url, store)
    key_over_canvas(page, "Escape")
    key_over_canvas(page, "1")  # person
    key_over_canvas(page, "b")
    drag(page, [(50, 50), (70, 70)])  # a new person from a brush stroke
    idle(page)
    i = canvas_state(page, "S.selection.index")
    key_over_canvas(page, "k")
    expect(page.locator("#label-canvas .mlc-kp")).to_have_value("nose")
    page.mouse.click(*to_screen(page, 60, 55))
    idle(page)
    expect(page.locator("#label-canvas .mlc-kp")).to_have_value("left_eye")  # the next one still missing
    page.mouse.click(*to_screen(page, 63, 53))
    idle(page)
    expect(page.locator("#label-canvas .mlc-kp")).to_have_value("right_eye")
    assert instance(page, i)["keypoints"][:6] == [60, 55, 2, 63, 53, 2]
    drag(page, [(20, 10), (80, 120)])  # a box: the whole skeleton, standing in it
    idle(page)
    expect(message(page)).to_contain_text("17 keypoints placed")
    k = instance(page, i)["keypoints"]
    assert all(k[3 * j + 2] == 2 and 20 <= k[3 * j] <= 80 and 10 <= k[3 * j + 1] <= 120 for j in range(17))
    assert k[1] < k[3 * 15 + 1]  # the nose above the left ankle
    key_over_canvas(page, "z")
    idle(page)
    assert instance(page, i)["keypoints"][:6] == [60, 55, 2, 63, 53, 2]


def _away(page) -> None:
    """The pointer off the picture (keys then reach the canvas only through the focus, or the page)."""
    box = page.locator("#label-canvas canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] + 150)


def test_keys_work_after_a_slider_and_the_id_field_and_a_click_that_takes_the_focus_back_keeps_the_selection(
        app_with_model, page):
    store, url, _ = app_with_model
    image_id = _start(page, url, store, at_least=3)
    sel = canvas_state(page, "S.selection.index")
    slider = page.locator("#label-canvas .mlc-opacity")
    slider.focus()
    _away(page)
    page.keyboard.press("a")  # a slider is not a text field: the review key works
    idle(page)
    assert instance(page, sel)["state"] == "accepted"
    sel = canvas_state(page, "S.selection.index")
    box = page.locator("#jump-id").get_by_role("textbox")
    box.click()  # the focus in the id field; then a click on the picture only takes it back
    other = next(it for it in canvas_state(page, "S.data.instances") if it["i"] != sel and it["state"] != "rejected")
    x, y, w, h = other["bbox"]
    page.mouse.click(*to_screen(page, x + w / 2, y + h / 2))
    idle(page)
    assert canvas_state(page, "S.selection.index") == sel
    expect(page.locator("#label-canvas .mlc-hint")).to_contain_text("only took the focus back")
    page.keyboard.press("r")
    idle(page)
    assert instance(page, sel)["state"] == "rejected" and "r" not in box.input_value()  # not typed into the field
    page.locator("#btn-discard").click()  # (moving on saves: nothing of this test is kept in the store)
    idle(page)
    slider.focus()  # and `n` after a slider moves on to the next image (the page's key)
    _away(page)
    page.keyboard.press("n")
    page.wait_for_function(f"{ST}.imageId !== {image_id}")


def test_reject_the_rest_leaves_no_hidden_instance_selected_and_backspace_deletes(app_with_model, page):
    store, url, _ = app_with_model
    _start(page, url, store, at_least=2)
    first = canvas_state(page, "S.selection.index")
    key_over_canvas(page, "a")
    idle(page)
    assert canvas_state(page, "S.selection.index") not in (None, first)
    key_over_canvas(page, "R")
    idle(page)
    assert canvas_state(page, "S.selection.index") is None
    key_over_canvas(page, "e")
    drag(page, [(2, 64), (30, 64)])  # an eraser stroke edits nothing hidden
    idle(page)
    expect(message(page)).to_contain_text("select an instance to erase from")
    page.locator(f"#label-canvas .mlc-row[data-index='{first}']").click()
    _away(page)
    page.keyboard.press("Backspace")  # the page's key, as the canvas's: delete
    idle(page)
    assert instance(page, first) is None


def test_a_box_handle_dragged_outward_asks_the_model_and_keeps_the_class(app_with_model, page):
    store, url, _ = app_with_model
    _start(page, url, store)
    i = canvas_state(page, "S.selection.index")
    before = instance(page, i)
    x, y, w, h = before["bbox"]
    key_over_canvas(page, "v")
    corner = (x + w, y + h)
    drag(page, [corner, (min(127, corner[0] + 12), min(127, corner[1] + 12))])
    idle(page)
    expect(message(page)).to_contain_text("in the larger box")  # replaced, or the model found nothing there
    after = instance(page, i)
    assert after["category_id"] == before["category_id"]
    if "mask is replaced" in message(page).inner_text():
        key_over_canvas(page, "z")
        idle(page)
        assert instance(page, i)["bbox"] == before["bbox"]
    else:
        assert after["bbox"] == before["bbox"]  # refused: the handle is back where it was
