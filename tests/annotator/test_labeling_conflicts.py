"""Edits are never lost (issue 7): proposals made again while a person has the image open, rows that
vanish, and rows that cannot be decoded."""

import numpy as np
import pytest
from sqlalchemy import select, update

from annotator.labeling import LabelSession, SaveConflict
from db import masks
from db.schema import Annotation
from db.annotations import write_proposals
from db.instances import Instances
from tests.annotator.test_labeling import _busiest_image, _rows, proposed_store  # noqa: F401 - fixture
from tests.db.test_annotations import _version


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
    summary = a.rebase()
    assert "2 change(s) are kept" in summary
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
    ls.rebase()
    ls.save("alice")
    assert sum(r.review_state == "accepted" for r in _rows(store, image_id)) == 2


def test_untouched_instances_follow_the_store_after_rebase(proposed_store):
    store = proposed_store
    image_id = _busiest_image(store)
    a, b = LabelSession(store, image_id), LabelSession(store, image_id)
    b.reject(2)
    b.save("bob")
    a.accept(0)
    with pytest.raises(SaveConflict):
        a.save("alice")
    a.rebase()
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
    from annotator.ui import LabelTab

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
    out = tab.open(image_id + 1, ls)  # moving on saves first: refused, so it stays
    assert out[0] is ls and ls.dirty and "kept" in out[1]["message"]
    out = tab.save(ls)
    assert "saved image" in out[1]["message"]
    assert any(r.review_state == "accepted" for r in _rows(store, image_id))


@pytest.mark.parametrize("edit", [
    lambda ls: ls.paint([(float("nan"), 3.0)], 4),
    lambda ls: ls.paint([(3.0, 3.0)], float("inf")),
    lambda ls: ls.polygon([(0, 0), (2 ** 63, 0), (5, 5)]),
    lambda ls: ls.set_box(0, 0, float("nan"), 5),
    lambda ls: ls.select_at(float("inf"), 1),
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
    assert "could not be kept: their class was deleted" in ls.rebase()
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
    a.rebase()
    a.save("alice")
    kept = [r for r in _rows(store, image_id) if r.review_state == "accepted"]
    assert len(kept) == 1 and kept[0].source == "model" and kept[0].score is not None
    assert kept[0].model_version_id is not None and kept[0].original is not None
