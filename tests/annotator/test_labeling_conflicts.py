"""Edits are never lost (issue 7): proposals made again while a person has the image open, rows that
vanish, and rows that cannot be decoded. Two browsers on one image (issue 13): the second save is refused,
its edits are listed next to what the other person saved, to re-apply or drop instance by instance."""

import numpy as np
import pytest
from sqlalchemy import select, update

from annotator import canvas
from annotator.labeling import LabelSession, SaveConflict
from db import masks
from db.errors import UserError
from db.schema import Annotation
from db.annotations import write_proposals
from db.instances import Instances
from tests.annotator.test_labeling import _busiest_image, _rows, proposed_store  # noqa: F401 - fixture
from tests.db.test_annotations import _version
from tests.annotator.pages import page_of


def _one_proposal(store, image_id) -> Instances:
    ls = LabelSession(store, image_id)
    m = np.zeros((ls.height, ls.width), bool)
    m[2:9, 3:12] = True
    out = Instances(ls.height, ls.width)
    out.add(ls.instances[0].category_id, [3, 2, 9, 7], mask=m, score=0.9, source="model", state="proposed")
    return out


def test_proposing_again_while_a_person_has_the_image_open_loses_nothing(proposed_store):
    store = proposed_store
    image_id = _busiest_image(store)
    a = LabelSession(store, image_id)
    a.accept(0)
    a.accept(1)
    accepted = [a.instances[0].mask.copy(), a.instances[1].mask.copy()]
    write_proposals(store, image_id, _one_proposal(store, image_id), _version(store))  # browser B / CLI
    with pytest.raises(SaveConflict):
        a.save("alice")
    assert a.dirty  # the edits are still in the session
    summary = a.conflicts.review()
    assert "2 refused edit(s) are kept" in summary and len(a.pending) == 2
    a.conflicts.reapply_all()  # both rows were replaced: they come back as new instances
    a.save("alice")
    rows = _rows(store, image_id)
    kept = [r for r in rows if r.review_state == "accepted"]
    assert len(kept) == 2
    got = sorted(masks.decode(r.segmentation, a.height, a.width).sum() for r in kept)
    assert got == sorted(int(m.sum()) for m in accepted)
    assert any(r.source == "model" and r.score == pytest.approx(0.9) for r in rows)  # B's proposal stays


def test_a_save_that_would_skip_a_vanished_row_is_refused_whole(proposed_store):
    store = proposed_store
    image_id = _busiest_image(store)
    ls = LabelSession(store, image_id)
    ls.accept(0)
    ls.accept(1)
    gone = ls.instances[0].ann_id
    with store.transaction() as s:  # a writer that does not move the row version on
        s.execute(Annotation.__table__.delete().where(Annotation.id == gone))
    with pytest.raises(SaveConflict, match=str(gone)):
        ls.save("alice")
    assert all(r.review_state == "proposed" for r in _rows(store, image_id))  # nothing half-written
    ls.conflicts.review()
    ls.conflicts.reapply_all()
    ls.save("alice")
    assert sum(r.review_state == "accepted" for r in _rows(store, image_id)) == 2


def test_untouched_instances_follow_the_store_after_a_conflict(proposed_store):
    store = proposed_store
    image_id = _busiest_image(store)
    a, b = LabelSession(store, image_id), LabelSession(store, image_id)
    b.reject(2)
    b.save("bob")
    a.accept(0)
    with pytest.raises(SaveConflict):
        a.save("alice")
    a.conflicts.review()
    assert a.instances[2].state == "rejected" and a.instances[0].state == "proposed"  # theirs, as saved
    a.conflicts.reapply_all()
    assert a.instances[2].state == "rejected" and a.instances[0].state == "accepted"
    a.save("alice")
    states = [r.review_state for r in _rows(store, image_id)]
    assert states[0] == "accepted" and states[2] == "rejected"


def test_one_undecodable_row_never_hides_the_others(proposed_store):
    store = proposed_store
    image_id = _busiest_image(store)
    first = _rows(store, image_id)[0].id
    with store.transaction() as s:
        s.execute(update(Annotation).where(Annotation.id == first)
                  .values(segmentation={"size": [1, 1], "counts": "!!garbage"}))
    ls = LabelSession(store, image_id)
    assert len(ls.instances) == len(_rows(store, image_id)) - 1
    assert ls.broken and f"annotation {first}" in ls.broken[0]
    ls.accept(0)
    ls.save("alice")
    with store.session() as s:  # the broken row is kept as it was, for a person to fix
        assert s.scalar(select(Annotation.segmentation).where(Annotation.id == first))["counts"] == "!!garbage"


def test_label_tab_keeps_edits_on_conflict_and_stays_on_the_image(proposed_store):
    from annotator.label_tab import LabelTab

    class NoProposer:
        last_error = ""

        def want(self, ids):
            pass

        def warm(self, ids):
            pass

    store = proposed_store
    image_id = _busiest_image(store)
    tab = LabelTab(store, NoProposer())
    ls = LabelSession(store, image_id)
    ls.accept(0)
    write_proposals(store, image_id, _one_proposal(store, image_id), _version(store))
    out = tab.open(image_id + 1, page_of(ls))  # moving on saves first: refused, so it stays
    assert out[0].session is ls and ls.dirty and "kept" in out[1]["message"] and "You stayed" in out[1]["message"]
    assert [p["kind"] for p in out[1]["pending"]] == ["reviewed"]
    out = tab.open(image_id + 1, page_of(ls))  # moving on again: the refused edit still waits for a decision
    assert out[0].session is ls and "still wait" in out[1]["message"] and "You stayed" in out[1]["message"]
    tab.edit(page_of(ls), {"op": "reapply_all"})
    out = tab.save(page_of(ls))
    assert "saved image" in out[1]["message"]
    assert any(r.review_state == "accepted" for r in _rows(store, image_id))


def _square(ls, x0, y0, n=6) -> np.ndarray:
    m = np.zeros((ls.height, ls.width), bool)
    m[y0:y0 + n, x0:x0 + n] = True
    return m


def _two_browsers(store):
    """Alice and Bob open the same image; Bob edits and saves first. Alice painted on instance 0, accepted 1,
    deleted 2 and drew a new one; Bob moved 0 to another class, rejected 1 and accepted 2."""
    image_id = _busiest_image(store)
    alice, bob = LabelSession(store, image_id), LabelSession(store, image_id)
    page_of(alice).user = "alice"  # who the canvas's save writes as
    alice.paint([(2, 2), (20, 2)], 3, index=0)
    alice.accept(1)
    alice.delete(2)
    alice.new_instance(3, mask=_square(alice, 60, 60))
    other = next(c for c in bob.categories if c != bob.instances[0].category_id and not bob.categories[c].keypoints)
    bob.set_class(other, index=0)
    bob.reject(1)
    bob.accept(2)
    bob.save("bob")
    mine = alice.instances.take(list(range(len(alice.instances))))
    with pytest.raises(SaveConflict):
        alice.save("alice")
    return alice, mine


def test_a_refused_save_shows_theirs_and_lists_mine_instance_by_instance(proposed_store):
    store = proposed_store
    alice, mine = _two_browsers(store)
    said = canvas.apply(page_of(alice), {"op": "save"})
    assert "since you opened it (bob saved it)" in said and "4 refused edit(s)" in said
    rows = _rows(store, alice.image_id)
    assert alice.instances.category_ids == [r.category_id for r in rows]  # the picture shows Bob's labels
    assert alice.instances.states == [r.review_state for r in rows] and alice.dirty
    data = canvas.payload(page_of(alice))
    assert data["theirs"]["by"] == "bob" and data["theirs"]["at"].endswith("Z")
    items = {p["kind"]: p for p in data["pending"]}
    assert sorted(items) == ["deleted", "drawn", "edited", "reviewed"]
    edited = items["edited"]
    assert edited["theirs"]["i"] == 0 and edited["theirs"]["by"] == "bob"
    assert edited["category_id"] == mine.category_ids[0] != edited["theirs"]["category_id"]
    assert edited["area"] == float(mine.area(0)) and edited["mask"]["counts"]
    assert items["reviewed"]["state"] == "accepted" and items["reviewed"]["theirs"]["state"] == "rejected"
    assert items["drawn"]["theirs"] is None and items["deleted"]["theirs"]["state"] == "accepted"

    canvas.apply(page_of(alice), {"op": "reapply", "item": edited["item"]})  # hers replaces his, instance 0
    assert alice.instances.category_ids[0] == mine.category_ids[0]
    assert np.array_equal(alice.instances[0].mask, mine[0].mask)
    canvas.apply(page_of(alice), {"op": "drop_mine", "item": items["reviewed"]["item"]})  # his reject stays
    canvas.apply(page_of(alice), {"op": "reapply", "item": items["deleted"]["item"]})
    assert alice.instances[2].deleted
    with pytest.raises(UserError, match="1 of your refused edits still wait"):
        canvas.apply(page_of(alice), {"op": "save"})
    canvas.apply(page_of(alice), {"op": "reapply", "item": items["drawn"]["item"]})  # added as new
    assert not alice.pending and alice.dirty
    assert "saved image" in canvas.apply(page_of(alice), {"op": "save"})
    rows = {r.id: r for r in _rows(store, alice.image_id)}
    first, second, third = mine.ann_ids[:3]
    assert rows[first].category_id == mine.category_ids[0] and rows[first].reviewed_by == "alice"
    assert np.array_equal(masks.decode(rows[first].segmentation, alice.height, alice.width), mine[0].mask)
    assert rows[second].review_state == "rejected"  # dropped: Bob's reject is what is stored
    assert third not in rows
    drawn = [r for r in rows.values() if r.source == "human" and r.category_id == 3]
    assert len(drawn) == 1 and drawn[0].area == 36
    assert len(rows) == len(mine) - 1


def test_undo_and_redo_go_across_reapply_and_drop(proposed_store):
    alice, mine = _two_browsers(proposed_store)
    alice.conflicts.review()
    theirs = alice.instances.take(list(range(len(alice.instances))))
    keys = [r.key for r in alice.pending]
    edited = next(r.key for r in alice.pending if r.kind == "edited")
    canvas.apply(page_of(alice), {"op": "reapply", "item": edited})
    assert alice.instances.category_ids[0] == mine.category_ids[0]
    canvas.apply(page_of(alice), {"op": "undo"})  # his version is back, and so is her item, in its place
    assert alice.instances.category_ids[0] == theirs.category_ids[0] and [r.key for r in alice.pending] == keys
    canvas.apply(page_of(alice), {"op": "redo"})
    assert alice.instances.category_ids[0] == mine.category_ids[0] and edited not in [r.key for r in alice.pending]
    canvas.apply(page_of(alice), {"op": "undo"})
    canvas.apply(page_of(alice), {"op": "drop_all"})
    assert not alice.pending and not alice.dirty  # nothing of hers left: the labels are the store's
    canvas.apply(page_of(alice), {"op": "undo"})
    assert [r.key for r in alice.pending] == keys and alice.dirty
    n = len(alice.instances)
    second = alice.new_instance(3, mask=_square(alice, 10, 70))  # an edit of hers after the conflict
    canvas.apply(page_of(alice), {"op": "reapply_all"})
    assert len(alice.instances) == n + 2 and not alice.pending
    canvas.apply(page_of(alice), {"op": "undo"})  # one step: every item listed again, the new instance removed
    assert len(alice.instances) == n + 1 and [r.key for r in alice.pending] == keys
    canvas.apply(page_of(alice), {"op": "redo"})
    assert len(alice.instances) == n + 2
    assert np.array_equal(alice.instances[n + 1].mask, mine[len(mine) - 1].mask)  # made again in order
    assert alice.instances[second].area == 36
    payload = canvas.payload(page_of(alice))  # still drawable
    assert not payload["pending"] and payload["dirty"]
    alice.save("alice")


def test_a_second_conflict_while_items_are_pending_keeps_everything_for_review(proposed_store):
    store = proposed_store
    alice, mine = _two_browsers(store)
    alice.conflicts.review()
    bob = LabelSession(store, alice.image_id)  # Bob saves again while Alice is deciding
    bob.reject(0)
    bob.save("bob")
    edited = next(r.key for r in alice.pending if r.kind == "edited")
    canvas.apply(page_of(alice), {"op": "reapply", "item": edited})
    canvas.apply(page_of(alice), {"op": "drop_mine", "item": next(r.key for r in alice.pending if r.kind == "reviewed")})
    with pytest.raises(UserError, match="2 of your refused edits still wait"):
        alice.save("alice")
    canvas.apply(page_of(alice), {"op": "reapply_all"})
    said = canvas.apply(page_of(alice), {"op": "save"})  # refused again: Bob's second save
    assert "since you opened it (bob saved it)" in said
    assert sorted(r.kind for r in alice.pending) == ["deleted", "drawn", "edited"]  # what she chose, listed again
    assert alice.instances.states[0] == "rejected"  # his newest
    theirs = next(p for p in canvas.payload(page_of(alice))["pending"] if p["kind"] == "edited")["theirs"]
    assert theirs["state"] == "rejected" and theirs["by"] == "bob"
    canvas.apply(page_of(alice), {"op": "reapply_all"})
    alice.save("alice")
    rows = {r.id: r for r in _rows(store, alice.image_id)}
    assert rows[mine.ann_ids[0]].category_id == mine.category_ids[0]
    assert rows[mine.ann_ids[0]].review_state == "accepted"
    assert rows[mine.ann_ids[1]].review_state == "rejected" and mine.ann_ids[2] not in rows


def test_refused_edits_the_same_as_theirs_are_not_listed(proposed_store):
    store = proposed_store
    image_id = _busiest_image(store)
    a, b = LabelSession(store, image_id), LabelSession(store, image_id)
    for s in (a, b):
        s.accept(0)
    b.save("bob")
    with pytest.raises(SaveConflict):
        a.save("alice")
    assert "the same as theirs" in a.conflicts.review()
    assert not a.pending and not a.dirty


@pytest.mark.parametrize("edit", [
    lambda ls: ls.paint([(float("nan"), 3.0)], 4),
    lambda ls: ls.paint([(3.0, 3.0)], float("inf")),
    lambda ls: ls.polygon([(0, 0), (2 ** 63, 0), (5, 5)]),
    lambda ls: ls.set_box(0, 0, float("nan"), 5),
    lambda ls: ls.set_keypoint("nose", float("inf"), 1),
])
def test_malformed_coordinates_are_refused_with_a_message(proposed_store, edit):
    from db.errors import UserError

    ls = LabelSession(proposed_store, _busiest_image(proposed_store))
    ls.select(0)
    before = ls.instances[0].mask.copy()
    with pytest.raises(UserError):
        edit(ls)
    assert np.array_equal(ls.instances[0].mask, before)
    ls.save("alice")  # the store stays writable


def test_training_samples_and_export_name_an_undecodable_row(proposed_store):
    from db import coco_export
    from db.errors import UserError
    from model.data import labeled_samples

    store = proposed_store
    image_id = _busiest_image(store)
    ls = LabelSession(store, image_id)
    ls.accept_all_shown(0.0)
    ls.save("alice")
    first = _rows(store, image_id)[0].id
    with store.transaction() as s:
        s.execute(update(Annotation).where(Annotation.id == first).values(segmentation={"size": [1, 1], "counts": "0"}))
    samples = [smp for split in (True, False) for smp in labeled_samples(store, split) if smp.image_id == image_id]
    assert f"annotation {first}" in samples[0].skipped[0]
    assert first not in samples[0].instances.ann_ids
    with pytest.raises(UserError, match=f"annotation {first}"):
        coco_export.build(store)


def test_a_category_deleted_while_its_new_instance_is_open_gives_a_conflict_not_a_crash(proposed_store):
    from db import categories

    store = proposed_store
    image_id = _busiest_image(store)
    extra = categories.add(store, "added-later")
    ls = LabelSession(store, image_id)
    m = np.zeros((ls.height, ls.width), bool)
    m[1:5, 1:5] = True
    ls.new_instance(extra, mask=m)
    ls.accept(0)
    categories.delete(store, extra)  # another browser, or the Dataset tab
    with pytest.raises(SaveConflict, match="category"):
        ls.save("alice")
    said = ls.conflicts.review()
    assert "class 'added-later'" in said and "deleted meanwhile" in said
    blocked = next(r for r in ls.pending if r.kind == "drawn")
    with pytest.raises(UserError, match="class 'added-later' .* was deleted meanwhile"):
        canvas.apply(page_of(ls), {"op": "reapply", "item": blocked.key})
    assert "re-applied 1" in canvas.apply(page_of(ls), {"op": "reapply_all"})  # the accept; the drawn one stays listed
    assert [r.key for r in ls.pending] == [blocked.key]
    assert canvas.payload(page_of(ls))["pending"][0]["blocked"]
    with pytest.raises(UserError, match="still wait"):
        ls.save("alice")
    canvas.apply(page_of(ls), {"op": "drop_mine", "item": blocked.key})
    ls.save("alice")
    assert _rows(store, image_id)[0].review_state == "accepted"


def test_a_proposal_kept_through_a_conflict_stays_a_model_proposal(proposed_store):
    store = proposed_store
    image_id = _busiest_image(store)
    version = _version(store)
    with store.transaction() as s:  # proposals as the proposer writes them: with their version
        s.execute(update(Annotation).where(Annotation.image_id == image_id).values(model_version_id=version))
    a = LabelSession(store, image_id)
    a.accept(0)
    write_proposals(store, image_id, _one_proposal(store, image_id), _version(store))
    with pytest.raises(SaveConflict):
        a.save("alice")
    a.conflicts.review()
    a.conflicts.reapply_all()
    a.save("alice")
    kept = [r for r in _rows(store, image_id) if r.review_state == "accepted"]
    assert len(kept) == 1 and kept[0].source == "model" and kept[0].score is not None
    assert kept[0].model_version_id is not None and kept[0].original is not None
