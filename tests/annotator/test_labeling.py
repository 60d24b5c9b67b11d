"""Labeling logic without a browser: review state, edits, undo/redo, save and the two-browser conflict."""

import numpy as np
import pytest
from sqlalchemy import select

from annotator.labeling import LabelSession, SaveConflict, review_summary
from db import masks
from db.coco_import import import_coco
from db.errors import UserError
from db.schema import Annotation, Image
from db.stats import review_stats


@pytest.fixture
def proposed_store(store, synth_dir):
    """The synthetic dataset imported as model proposals (scores spread over 0.2..0.95)."""
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    with store.transaction() as s:
        for k, a in enumerate(s.scalars(select(Annotation).order_by(Annotation.id))):
            a.score = 0.2 + (k % 4) * 0.25
            a.original = {"category_id": a.category_id, "segmentation": a.segmentation, "bbox": a.bbox,
                          **({"keypoints": a.keypoints} if a.keypoints else {})}
    return store


def _rows(store, image_id):
    with store.session() as s:
        return s.scalars(select(Annotation).where(Annotation.image_id == image_id).order_by(Annotation.id)).all()


def _busiest_image(store) -> int:
    from sqlalchemy import func

    with store.session() as s:
        return s.execute(select(Annotation.image_id).group_by(Annotation.image_id)
                         .order_by(func.count().desc(), Annotation.image_id)).scalars().first()


def test_accept_reject_delete_and_save_marks_done_once_nothing_is_unreviewed(proposed_store):
    image_id = _busiest_image(proposed_store)
    ls = LabelSession(proposed_store, image_id)
    n = len(ls.instances)
    assert n >= 3 and all(i.state == "proposed" for i in ls.instances)
    with proposed_store.session() as s:
        assert s.get(Image, image_id).status == "in_review"
    ls.accept(0)
    ls.reject(1)
    ls.delete(2)
    assert ls.save("alice") == n - 3  # the rest stay proposals: the image stays in review
    rows = _rows(proposed_store, image_id)
    assert rows[0].review_state == "accepted" and rows[0].reviewed_by == "alice"
    assert rows[1].review_state == "rejected"
    assert len(rows) == n - 1
    with proposed_store.session() as s:
        assert s.get(Image, image_id).status == "in_review"
    ls.reject_rest()
    assert ls.save("alice") == 0
    assert all(r.review_state != "proposed" for r in _rows(proposed_store, image_id))
    with proposed_store.session() as s:
        assert s.get(Image, image_id).status == "done"


def test_undo_redo_every_edit(proposed_store):
    ls = LabelSession(proposed_store, 1)
    before = ls.instances[0].mask.copy()
    ls.select(0)
    ls.paint([(5, 5), (20, 5)], radius=3)
    painted = ls.instances[0].mask.copy()
    assert painted.sum() > before.sum() and ls.instances[0].state == "accepted"
    ls.set_class(9)
    ls.undo()
    assert ls.instances[0].category_id != 9 or before is None
    ls.undo()
    assert np.array_equal(ls.instances[0].mask, before) and ls.instances[0].state == "proposed"
    ls.redo()
    assert np.array_equal(ls.instances[0].mask, painted)
    k = ls.new_instance(3, polygon=[(1, 1), (10, 1), (10, 10)])
    assert len(ls.instances) == k + 1
    ls.undo()
    assert len(ls.instances) == k
    ls.redo()
    assert ls.instances[k].category_id == 3


def test_mask_edits_keep_box_tight_and_area_exact(proposed_store):
    ls = LabelSession(proposed_store, 1)
    ls.select(0)
    m = np.zeros((ls.height, ls.width), bool)
    m[10:20, 30:50] = True
    ls.set_mask(m)
    ls.polygon([(30, 10), (40, 10), (40, 20), (30, 20)], subtract=True)
    assert ls.instances[0].bbox == [40.0, 10.0, 10.0, 10.0]
    ls.paint([(45, 15)], radius=2, erase=True)
    ls.save("bob")
    row = _rows(proposed_store, 1)[0]
    saved = masks.decode(row.segmentation, ls.height, ls.width)
    assert row.area == saved.sum() and row.bbox == masks.mask_bbox_xywh(saved)
    assert not saved[10:20, 30:40].any() and not saved[15, 45]


def test_box_cut_and_derive(proposed_store):
    ls = LabelSession(proposed_store, 1)
    ls.select(0)
    m = np.zeros((ls.height, ls.width), bool)
    m[10:30, 10:30] = True
    ls.set_mask(m)
    ls.set_box(15, 15, 25, 40)
    assert ls.instances[0].bbox == [15.0, 15.0, 10.0, 15.0]
    with pytest.raises(UserError, match="empty"):
        ls.set_box(5, 5, 5, 9)


def test_keypoints_stay_on_the_person(proposed_store):
    with proposed_store.session() as s:
        person = s.scalars(select(Annotation).where(Annotation.category_id == 1)).first()
    ls = LabelSession(proposed_store, person.image_id)
    i = next(k for k, it in enumerate(ls.instances) if it.ann_id == person.id)
    ls.select(i)
    ls.set_keypoint("left_wrist", 12.5, 30.25, 1)
    ls.set_keypoint("left_wrist", 12.5, 30.25, 2)
    with pytest.raises(UserError, match="has no keypoint 'tail'"):
        ls.set_keypoint("tail", 1, 1)
    ls.save("carol")
    row = next(r for r in _rows(proposed_store, person.image_id) if r.id == person.id)
    j = 9  # left_wrist
    assert row.keypoints[3 * j:3 * j + 3] == [12.5, 30.25, 2]
    assert row.num_keypoints == sum(1 for v in row.keypoints[2::3] if v > 0)


def test_second_browser_save_is_refused_and_nothing_overwritten(proposed_store):
    a = LabelSession(proposed_store, 3)
    b = LabelSession(proposed_store, 3)
    a.accept(0)
    a.save("alice")
    b.reject(0)
    with pytest.raises(SaveConflict, match="another browser"):
        b.save("bob")
    assert _rows(proposed_store, 3)[0].review_state == "accepted"
    c = LabelSession(proposed_store, 3)  # reload shows alice's labels
    assert c.instances[0].state == "accepted"


def test_the_score_filter_shows_and_accepts_only_proposals_at_or_above_it(proposed_store):
    ls = LabelSession(proposed_store, 1)
    shown = ls.visible(min_score=0.5)
    assert all(ls.instances[i].score >= 0.5 for i in shown)
    n = ls.accept_all_shown(0.5)
    assert n == len(shown)
    assert all(ls.instances[i].state == "accepted" for i in shown)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_review_measures_per_version_and_time_spent(proposed_store, monkeypatch):
    from db.schema import ModelVersion, Review

    clock = _Clock()
    monkeypatch.setattr(LabelSession, "clock", clock)
    with proposed_store.transaction() as s:
        mv = ModelVersion(size="tiny", checkpoint="x.pt")
        s.add(mv)
        s.flush()
        for a in s.scalars(select(Annotation).where(Annotation.image_id.in_([1, 2]))):
            a.model_version_id = mv.id
        vid = mv.id
    assert review_stats(proposed_store) == []  # nothing saved yet
    one = LabelSession(proposed_store, 1)
    assert len(one.instances) >= 2
    clock.now += 5
    one.accept(0)  # unchanged
    clock.now += 3
    one.select(1)
    clock.now += 600  # a pause: not counted
    one.paint([(0, 0)], radius=4)  # edited
    clock.now += 2
    square = np.zeros((one.height, one.width), bool)
    square[:3, :3] = True
    one.new_instance(one.instances.category_ids[0], mask=square)
    clock.now += 4
    one.save("ann")
    two = LabelSession(proposed_store, 2)
    clock.now += 1
    assert two.reject_rest() >= 1  # "reject the rest": saving alone leaves unseen proposals as they are
    two.save("bob")
    (st,) = review_stats(proposed_store)
    assert st.version_id == vid and st.images == 2 and st.saves == 2
    assert st.accepted_unchanged == 1 and st.accepted_edited == 1 and st.drawn == 1 and st.assisted == 0
    assert st.rejected == st.proposals - 2 and 0 < st.mean_iou < 1
    assert st.share_unchanged == pytest.approx(1 / st.proposals)
    assert st.seconds == pytest.approx(5 + 3 + 2 + 4 + 1)  # the 600 s pause is left out
    with proposed_store.session() as s:
        rows = s.scalars(select(Review).order_by(Review.id)).all()
        assert [(r.user, r.image_id, r.actions) for r in rows] == [("ann", 1, 4), ("bob", 2, 1)]
        assert rows[0].opened_at <= rows[0].saved_at
    # saving again counts only what changed since the last save, and a refused save records nothing
    clock.now += 7
    one.reject(0)
    stale = LabelSession(proposed_store, 1)
    one.save("ann")
    stale.reject(1)
    with pytest.raises(SaveConflict):
        stale.save("eve")
    with proposed_store.session() as s:
        assert s.query(Review).count() == 3
    (st,) = review_stats(proposed_store)
    assert st.images == 2 and st.saves == 3 and st.seconds == pytest.approx(15 + 8)  # 8 s since its last save


def test_review_summary_counts_assisted_keypoint_moves_and_deleted_proposals(proposed_store):
    from annotator.labeling import review_summary
    from db.instances import Instances

    with proposed_store.session() as s:
        person = s.scalars(select(Annotation).where(Annotation.keypoints.is_not(None))).first()
        image_id = person.image_id
    ls = LabelSession(proposed_store, image_id)
    k = ls.instances.ann_ids.index(person.id)
    name = ls.categories[ls.instances.category_ids[k]].keypoints[0]
    ls.accept(k)
    x, y, _ = ls.instances.keypoints[k][:3]
    ls.set_keypoint(name, x + 5, y + 5, index=k)
    others = [i for i in range(len(ls.instances)) if i != k]
    for i in others:
        ls.delete(i)
    found = Instances(ls.height, ls.width)
    found.add(ls.instances.category_ids[k], [0, 0, 0, 0], mask=ls.instances.mask(k), source="assist")
    ls.add_found(found)
    got = review_summary(ls.instances)
    assert got["proposals"] == 1 + len(others) and got["rejected"] == len(others)
    assert got["accepted_edited"] == 1 and got["keypoints_moved"] == 1 and got["assisted"] == 1
    assert got["iou_count"] == 1 and got["iou_sum"] == pytest.approx(1.0)  # the mask itself was not changed


def test_proposals_imported_from_a_coco_file_count_as_unchanged_unless_edited(store, synth_dir):
    """An imported proposal keeps no copy of itself as made: accepted as loaded, it is unchanged (no IoU and
    no keypoint moves are made up against a missing original)."""
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    ls = LabelSession(store, 1)
    ls.accept(0)
    ls.accept(1)
    ls.set_class(ls.instances.category_ids[2], index=2)  # edited (the same class, but touched)
    ls.reject(3)
    got = review_summary(ls.instances)
    assert (got["accepted_unchanged"], got["accepted_edited"], got["rejected"]) == (2, 1, 1)
    assert got["keypoints_moved"] == 0 and got["iou_count"] == 0
