"""Photos, not thumbnails (issue 19): a 6000x4000 image with 20 proposals is labeled with masks held as
crops, undo steps that cost what they touched, a bounded history, and strokes drawn within their own box."""

import numpy as np
import pytest

from annotator import canvas
from annotator.history import EditHistory
from annotator.labeling import LabelSession
from db import crops
from db.annotations import write_proposals
from db.categories import add as add_category
from db.ingest import ingest
from db.errors import UserError
from model.synthetic import photo_instances, write_photo
from tests.annotator.pages import page_of
from tests.db.test_annotations import _version

W, H = 6000, 4000


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    return write_photo(tmp_path_factory.mktemp("photo") / "photo.jpg", W, H)


@pytest.fixture
def photo(store, photo_file):
    """A store holding one 6000x4000 photo with 20 model proposals; its image id."""
    (image_id, _), = ingest(store, [photo_file]).added
    cid = add_category(store, "blob", "", [], [])
    write_proposals(store, image_id, photo_instances(W, H, 20, cid), _version(store))
    return image_id


def _held(ls: LabelSession) -> int:
    """Bytes of decoded mask pixels the session holds (crops), over instances and undo steps."""
    inst = sum(c.nbytes for c in ls.instances._crops if c is not None)
    steps = [one for step in ls.edits._undo + ls.edits._redo for _, one in step.changes if one is not None]
    return inst + sum(c.nbytes for one in steps for c in one._crops if c is not None)


def test_an_open_photo_holds_its_masks_as_crops_not_frames(store, photo):
    ls = LabelSession(store, photo)
    assert len(ls.instances) == 20
    for i, c in enumerate(ls.instances._crops):
        x, y, w, h = ls.instances.bboxes[i]
        assert isinstance(c, crops.Crop) and c.m.shape == (h, w) and (c.x, c.y) == (x, y)
    assert _held(ls) < 20 * 1001 * 1001  # each crop is its object's box: far below one 24 MB frame
    assert ls.instances.nbytes() < 25 * 2 ** 20


def test_accepts_and_strokes_add_steps_in_proportion_to_what_they_touch(store, photo):
    ls = LabelSession(store, photo)
    page = page_of(ls)
    for _ in range(10):
        canvas.apply(page, {"op": "accept", "index": ls.selected})
    assert ls.edits.nbytes < 10 * 64 * 1024  # an accept keeps the instance's RLE, not a mask
    assert all(one._crops == [None] for step in ls.edits._undo for _, one in step.changes)
    i = ls.selected
    before = ls.instances.crop(i)
    x, y, w, h = (int(v) for v in ls.instances.bboxes[i])
    canvas.apply(page, {"op": "stroke", "index": i, "radius": 20, "points": [[x + w // 2, y + h // 2],
                                                                             [x + w // 2 + 300, y + h // 2]]})
    after = ls.instances.crop(i)
    assert after.area() > before.area() and crops.minus(before, after).empty()  # painted on, nothing lost
    assert after.nbytes < (w + 400) * (h + 50)  # the union of the mask and the stroke's box, not the frame
    step = ls.edits._undo[-1]
    assert step.nbytes < 64 * 1024
    assert ls.undo() and ls.instances.crop(i).area() == before.area()
    assert ls.redo() and ls.instances.crop(i).area() == after.area()


def test_the_history_keeps_its_budget_and_says_how_many_old_steps_it_dropped(store, photo):
    ls = LabelSession(store, photo, history_bytes=10_000)
    for _ in range(15):
        ls.accept(ls.selected)
        ls.selected = ls.next_unreviewed()
    assert ls.edits.nbytes <= 10_000 and ls.edits.dropped > 0 and len(ls.edits) == 15 - ls.edits.dropped
    while ls.undo():
        pass
    assert sum(st == "accepted" for st in ls.instances.states) == ls.edits.dropped  # the oldest stay done


def test_history_steps_restore_created_and_deleted_instances_in_order():
    from db.instances import Instances

    inst = Instances(50, 50)
    for k in range(3):
        inst.add(1, [k, k, 5, 5], mask=np.pad(np.ones((5, 5), bool), ((k, 45 - k), (k, 45 - k))))
    hist = EditHistory()
    hist.record(inst, [1, 3])  # an edit of instance 1 that also draws a new one
    inst.category_ids[1] = 5
    inst.set_crop(1, crops.Crop(30, 30, np.ones((4, 4), bool)))
    inst.add(2, [0, 0, 1, 1])
    assert hist.undo(inst)[0] and inst.category_ids == [1, 1, 1]
    assert [inst.crop(k).x for k in range(3)] == [0, 1, 2]
    assert hist.redo(inst)[0] and inst.category_ids == [1, 5, 1, 2] and inst.crop(1).x == 30
    assert not hist.redo(inst)[0]


def test_a_stroke_costs_its_own_box_and_the_limits_are_named(store, photo):
    ls = LabelSession(store, photo)
    page = page_of(ls)
    i = ls.selected
    with pytest.raises(UserError, match="brush radius 6000 is over the limit"):
        canvas.apply(page, {"op": "stroke", "index": i, "radius": W, "points": [[10, 10]]})
    many = [[float(x), float(y)] for x, y in zip(np.linspace(0, W, 20_000), np.tile([0, H], 10_000))]
    with pytest.raises(UserError, match="over the limit of 150 million"):
        canvas.apply(page, {"op": "stroke", "index": i, "radius": 1000, "points": many})
    assert not ls.dirty
    dense = [[3000 + k * 0.01, 2000.0] for k in range(20_000)]  # a slow drag: 20,000 points, thinned
    canvas.apply(page, {"op": "stroke", "category": ls.instances.category_ids[0], "radius": 30, "points": dense})
    new = ls.instances.crop(len(ls.instances) - 1)
    assert new.nbytes < 300 * 100 and new.area() > 0.9 * np.pi * 30 ** 2


def test_a_stroke_is_the_same_pixels_as_drawing_it_on_the_whole_frame():
    from PIL import Image as PILImage, ImageDraw

    class Small(LabelSession):  # the stroke only: the session's frame size is all it reads
        def __init__(self):
            self.width, self.height = 200, 120

    pts = [(15.5, 20.0), (60.0, 90.0), (190.0, 5.0)]
    got = Small()._stroke(pts, 6).full(120, 200)
    img = PILImage.new("1", (200, 120), 0)
    d = ImageDraw.Draw(img)
    d.line(pts, fill=1, width=12)
    for x, y in pts:
        d.ellipse([x - 6, y - 6, x + 6, y + 6], fill=1)
    want = np.asarray(img, dtype=bool)
    assert (got ^ want).sum() <= 0.002 * want.sum()  # the same brush, drawn in its own box


def test_between_requests_a_page_holds_its_labels_as_rle_and_sends_each_crop_once(store, photo, monkeypatch):
    ls = LabelSession(store, photo)
    page = page_of(ls)
    first = canvas.payload(page)
    assert all(c is None for c in ls.instances._crops)  # nothing decoded is kept past the answer
    decoded = []
    real = crops.decode_crop
    monkeypatch.setattr(crops, "decode_crop", lambda *a: decoded.append(a[0]) or real(*a))
    canvas.apply(page, {"op": "accept", "index": 0})
    second = canvas.payload(page)
    assert decoded == [] and [d["mask"] for d in first["instances"]] == [d["mask"] for d in second["instances"]]
    x, y, _, _ = (int(v) for v in ls.instances.bboxes[1])
    canvas.apply(page, {"op": "stroke", "index": 1, "radius": 3, "points": [[x + 2, y + 2]]})  # the box's corner:
    third = canvas.payload(page)                                                              # outside the ellipse
    assert len(decoded) == 1 and third["instances"][1]["area"] > second["instances"][1]["area"]  # the one edited
    assert third["instances"][1]["mask"] != second["instances"][1]["mask"]
    assert len(page.display_cache["crops"]) == len(ls.instances)
