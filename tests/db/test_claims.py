"""Claims and assignments (db.claims): a team is handed different images, on SQLite and PostgreSQL."""

import threading

import pytest

from db import annotations, claims
from db.errors import UserError
from db.instances import Instances
from db.schema import ModelVersion
from tests.db.test_annotations import _unlabeled


def test_people_taking_from_one_queue_at_once_never_get_the_same_image(store, tmp_path):
    ids = _unlabeled(store, tmp_path, 40)
    queue = claims.queue_for(store, "nobody")
    assert sorted(queue) == sorted(ids)
    got: dict[str, list[int]] = {f"p{k}": [] for k in range(6)}
    start = threading.Barrier(len(got))

    def person(name):
        start.wait()
        while True:  # each takes the first free image of the same queue, as Next does, and keeps it
            mine = claims.take(store, name, [i for i in queue if i not in got[name]], 600)
            if not mine:
                return
            got[name] += mine

    threads = [threading.Thread(target=person, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for g in got.values() for i in g]
    assert sorted(every) == sorted(ids)  # every image handed out exactly once
    for name, mine in got.items():  # and each person's in the queue's order
        assert mine == sorted(mine, key=queue.index)


def test_a_claim_renews_ends_expires_and_counts_as_free_for_its_holder(store, tmp_path):
    a, b, c = _unlabeled(store, tmp_path, 3)
    assert claims.take(store, "leo", [a, b], 600) == [a]
    assert claims.take(store, "ana", [a, b], 600) == [b]  # a is leo's
    assert claims.take(store, "leo", [a], 600) == [a]  # his own: renewed
    assert claims.holder(store, a).user == "leo" and claims.holder(store, a, other_than="leo") is None
    assert claims.held_by_others(store, "ana") == {a}
    assert claims.renew(store, "ana", [a], 600) == 0  # nobody renews another's claim
    assert claims.release(store, "ana", [a]) == 0  # nor ends it
    assert claims.release(store, "leo", [a]) == 1
    assert claims.take(store, "ana", [a], 600) == [a]
    assert claims.take(store, "max", [c], -1) == [c]  # expired at once (a closed tab, long ago)
    assert claims.holder(store, c) is None and claims.renew(store, "max", [c], 600) == 0
    assert claims.take(store, "leo", [c], 600) == [c]
    assert claims.take(store, "leo", [10 ** 9], 600) == []  # gone from the store: passed over
    holds = {h.user: h for h in claims.who_holds_what(store)}
    assert holds["ana"].claimed == 2 and holds["leo"].claimed_ids == [c]
    with pytest.raises(UserError, match="at most 200"):
        claims.take(store, "x" * 201, [a], 600)


def test_saving_an_image_done_ends_every_claim_on_it(store, synth_dir):
    from db.coco_import import import_coco

    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    claims.take(store, "leo", [1], 600)
    got = annotations.load(store, 1)
    inst = Instances.from_rows(got.annotations, got.image.height, got.image.width)
    annotations.save_review(store, 1, got.image.row_version, inst, "leo", states=["proposed"] * len(inst),
                            status="in_review")
    assert claims.holder(store, 1).user == "leo"  # proposals left: still his
    annotations.save_review(store, 1, got.image.row_version + 1, inst, "leo", states=["accepted"] * len(inst))
    assert claims.holder(store, 1) is None


def test_assignments_reserve_images_for_one_person_and_come_first_in_their_queue(store, tmp_path):
    ids = _unlabeled(store, tmp_path, 12)
    queue = claims.queue_for(store, "ana")
    last_two = queue[-2:]
    assert claims.assign(store, "leo", last_two, by="boss") == 2
    assert claims.queue_for(store, "leo")[:2] == last_two  # his first
    assert not set(last_two) & set(claims.queue_for(store, "ana"))  # never handed to anyone else
    assert claims.take(store, "ana", last_two, 600) == []
    assert claims.take(store, "leo", last_two, 600, n=2) == last_two
    assert claims.queue_for(store, "ana", "all") == sorted(ids)  # the status views show every image
    with pytest.raises(UserError, match="no image with id 999999"):
        claims.assign(store, "ana", [ids[0], 999999], by="boss")
    assert claims.holder(store, ids[0]) is None  # nothing assigned
    holds = {h.user: h for h in claims.who_holds_what(store)}
    assert (holds["leo"].assigned, holds["leo"].assigned_done) == (2, 0)
    assert claims.unassign(store, user="leo") == 2
    assert not set(last_two) & set(claims.queue_for(store, "ana"))  # he still has them open
    claims.release(store, "leo")
    assert set(last_two) <= set(claims.queue_for(store, "ana"))


def test_images_matching_a_filter_by_folder_status_category_and_ids(store, synth_dir):
    from db.coco_import import import_coco

    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    every = annotations.image_ids(store)
    assert annotations.images_matching(store) == every
    assert annotations.images_matching(store, status="done") == []
    assert annotations.images_matching(store, ids=[every[0], 10 ** 9]) == [every[0]]
    some = annotations.images_matching(store, category_id=1)
    assert some and set(some) <= set(every)
    assert annotations.images_matching(store, folder="no-such-folder") == []
    with pytest.raises(UserError, match="status 'finished'"):
        annotations.images_matching(store, status="finished")


def test_workers_pass_over_images_people_hold_and_take_the_queue_order(store, tmp_path):
    ids = _unlabeled(store, tmp_path, 10)
    with store.transaction() as s:
        s.add(ModelVersion(id=3, size="tiny", checkpoint="x.pt"))
    order = claims.queue_for(store, "x")
    claims.take(store, "leo", [order[0]], 600)  # open in leo's page
    got = annotations.claim_images(store, "w", 3, 3, 600, order=order)
    assert got == order[1:4]
    rest = annotations.claim_images(store, "w2", 3, 100, 600, order=order)
    assert rest == order[4:] and order[0] not in rest
    claims.release(store, "leo")
    assert annotations.claim_images(store, "w3", 3, 5, 600, order=order) == [order[0]]
    assert sorted(got + rest + [order[0]]) == sorted(ids)


def test_an_image_finished_or_being_proposed_on_meanwhile_is_not_handed_out(store, synth_dir):
    from db.coco_import import import_coco

    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    first = claims.LABELING[0]
    queue = claims.queue_for(store, "ann")  # read a moment before bob finishes the first image
    got = annotations.load(store, queue[0])
    inst = Instances.from_rows(got.annotations, got.image.height, got.image.width)
    annotations.save_review(store, queue[0], got.image.row_version, inst, "bob", states=["accepted"] * len(inst))
    with store.transaction() as s:
        s.add(ModelVersion(id=4, size="tiny", checkpoint="x.pt"))
    assert annotations.claim_images(store, "worker", 4, 1, 600, order=queue) == [queue[1]]  # proposing on it
    assert claims.take(store, "ann", queue, 600, where=claims.still_in(first)) == [queue[2]]
    review = claims.queue_for(store, "rita", annotations.TO_REVIEW)
    assert review == [queue[0]]
    annotations.give_verdict(store, queue[0], got.image.row_version + 1, "approved", "rex")
    assert claims.take(store, "rita", review, 600, where=claims.still_in(annotations.TO_REVIEW)) == []  # judged


def test_labels_sent_back_are_not_proposed_again_under_their_labeler(store, tmp_path):
    ids = _unlabeled(store, tmp_path, 2)
    got = annotations.load(store, ids[0])
    annotations.save_review(store, ids[0], got.image.row_version, Instances(12, 16), "ann")  # before any proposals
    annotations.give_verdict(store, ids[0], got.image.row_version + 1, "sent_back", "rita", "empty?")
    with store.transaction() as s:
        s.add(ModelVersion(id=9, size="tiny", checkpoint="x.pt"))
    assert annotations.claim_images(store, "w", 9, 5, 600) == [ids[1]]  # not the one waiting for ann
    assert annotations.sent_back_to(store) == {ids[0]: "ann"}
    assert claims.queue_for(store, "bob") == [ids[1]] and claims.queue_for(store, "ann")[0] == ids[0]
