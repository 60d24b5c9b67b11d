"""Proposals follow the active model, and the loop runs itself (annotator.follow); an open page whose proposals
are out of date says so and refreshes in place, keeping the person's edits (issue 20)."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from annotator import follow, model_view
from annotator.label_tab import LabelTab
from db import annotations, claims, jobs, settings
from db.errors import UserError
from db.instances import Instances
from db.schema import ModelVersion
from tests.annotator.test_labeling import _busiest_image, proposed_store  # noqa: F401 - fixture

VERSION = 7


def _activate(store, version_id=VERSION):
    with store.transaction() as s:
        for v in s.query(ModelVersion):
            v.is_active = False
        s.add(ModelVersion(id=version_id, size="tiny", checkpoint="x.pt", is_active=True, promoted=True))


def _one_box(store, image_id) -> Instances:
    """A stand-in for the model's proposals on an image: one 4x4 square in its top-left corner."""
    im = annotations.images(store, [image_id])[image_id]
    inst = Instances(im.height, im.width)
    m = np.zeros((im.height, im.width), bool)
    m[:4, :4] = True
    inst.add(1, [0, 0, 4, 4], mask=m, score=0.9)
    return inst


@pytest.fixture
def fake_model(monkeypatch, proposed_store):
    """The active version as far as the follower can tell, and its proposals: one box per image."""
    _activate(proposed_store)
    made = []

    def propose_images(store, ids, options, min_score, predictor=None):
        annotations.write_proposals_of_images(store, {i: _one_box(store, i) for i in ids}, predictor.version.id)
        made.extend(ids)
        return {"images": len(ids), "proposals": len(ids), "skipped": {}}

    monkeypatch.setattr(follow.api, "propose_images", propose_images)
    lock = threading.Lock()
    proposer = SimpleNamespace(busy=lambda: False, model_lock=lambda: lock, options=None, min_score=0.3,
                               predictor=lambda: SimpleNamespace(version=SimpleNamespace(id=VERSION)))
    return proposer, made


def test_a_newly_active_version_reproposes_the_images_not_done_in_queue_order_skipping_open_ones(
        proposed_store, fake_model):
    proposer, made = fake_model
    order = annotations.queue(proposed_store)
    claims.take(proposed_store, "ann", [order[1]], 600)  # open in ann's page
    f = follow.Follower(proposed_store, proposer, batch=2)
    assert f.repropose_some() == 2 and made == [order[0], order[2]]
    while f.repropose_some():
        pass
    assert made == [i for i in order if i != order[1]]  # every image not done, most needed first, once
    done, total = annotations.proposal_progress(proposed_store, VERSION)
    assert (done, total) == (len(order) - 1, len(order))
    assert "of %d" % total in model_view.proposals_line(proposed_store)
    claims.release(proposed_store, "ann")  # she moved on: now it gets its turn
    assert f.repropose_some() == 1 and made[-1] == order[1]
    assert annotations.proposal_progress(proposed_store, VERSION) == (total, total)


def test_the_follower_leaves_the_work_to_workers_and_to_the_labelers_requests(proposed_store, fake_model):
    proposer, made = fake_model
    f = follow.Follower(proposed_store, proposer)
    settings.worker_beat(proposed_store, "gpu-1")
    assert f.repropose_some() == 0 and settings.workers_alive(proposed_store) == ["gpu-1"]
    assert "1 proposal worker" in model_view.proposals_line(proposed_store)
    settings.worker_gone(proposed_store, "gpu-1")
    proposer.busy = lambda: True  # proposals for a labeler's next images wait: they go first
    assert f.repropose_some() == 0
    proposer.busy = lambda: False
    assert f.repropose_some() == 2


def test_a_fine_tune_starts_by_itself_after_every_n_saved_images_never_two_at_once(proposed_store, fake_model,
                                                                                    monkeypatch):
    proposer, _ = fake_model
    proposer.options = SimpleNamespace(device="cpu", weights="none")
    started = []

    def start(store, opts):
        started.append(opts)
        return jobs.create(store, "train", {"epochs": 3, "size": "tiny"})

    monkeypatch.setattr(follow.api, "start_training_process", start)
    monkeypatch.setattr(follow.api, "training_data_problem", lambda store: None)
    f = follow.Follower(proposed_store, proposer)
    assert f.fine_tune_if_due() is None  # off by default
    with pytest.raises(UserError, match="whole number"):
        settings.set_fine_tune_every(proposed_store, "2.5")
    assert "every 2 newly saved" in model_view.set_auto_fine_tune(proposed_store, 2)
    ids = annotations.queue(proposed_store)
    from annotator.routes import label_image

    label_image(proposed_store, None, ids[0], [{"op": "reject_rest"}, {"op": "save"}], "ann")
    assert f.fine_tune_if_due() is None  # 1 of 2
    label_image(proposed_store, None, ids[1], [{"op": "reject_rest"}, {"op": "save"}], "ann")
    job_id = f.fine_tune_if_due()
    assert job_id is not None and len(started) == 1
    assert f.fine_tune_if_due() is None  # running: never two at once
    jobs.set_state(proposed_store, job_id, "done", "done")
    assert f.fine_tune_if_due() is None  # counted again from the last start
    for i in ids[2:4]:
        label_image(proposed_store, None, i, [{"op": "reject_rest"}, {"op": "save"}], "ann")
    assert f.fine_tune_if_due() is not None and started[-1].epochs == 3  # as the last one was asked for


def test_an_open_page_hears_of_newer_proposals_and_refreshes_keeping_its_edits(proposed_store, fake_model):
    proposer, made = fake_model
    image_id = _busiest_image(proposed_store)
    proposer = SimpleNamespace(
        last_error="", want=lambda ids: None, warm=lambda ids: None, outdated=lambda i: VERSION,
        propose_now=lambda i: annotations.write_proposals(proposed_store, i, _one_box(proposed_store, i), VERSION)
        and {"proposals": 1})
    tab = LabelTab(proposed_store, proposer)
    page, data = tab.open(image_id, None, SimpleNamespace(username="ann", session_hash="t1"))
    ls = page.session
    assert tab.canvas_presence({"token": page.token, "browser": "b"})["news"].startswith("Model version 7 is active")
    n_old = len(ls.instances)
    ls.accept(0)  # her edit: the first proposal accepted
    accepted = ls.instances.ann_ids[0]
    ls.new_instance(1, polygon=[(1, 1), (9, 1), (9, 9)])  # and one drawn
    said = tab.canvas_edit({"token": page.token, "op": "refresh", "seq": 1})["message"]
    assert "1 new proposal(s)" in said and "kept" in said
    ls = page.session
    states = [(it.ann_id, it.state, it.source) for it in ls.instances if not it.deleted]
    # her accept of the replaced proposal (its row is gone: kept as a new row) and her drawing, on top of the new
    # model's one proposal; the old unreviewed proposals are gone
    assert sorted(states, key=str) == sorted([(None, "accepted", "model"), (None, "accepted", "human"),
                                              (states[0][0], "proposed", "model")], key=str)
    assert states[0][0] not in (None, accepted) and n_old > 2 and ls.dirty and not ls.pending
    ls.save("ann")
    assert tab.canvas_presence({"token": page.token, "browser": "b"})["news"] == ""


def test_propose_again_refreshes_the_page_in_place(proposed_store, fake_model):
    image_id = _busiest_image(proposed_store)
    calls = []

    def propose_now(i):
        calls.append(i)
        annotations.write_proposals(proposed_store, i, _one_box(proposed_store, i), VERSION)
        return {"proposals": 1}

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None,
                                                   outdated=lambda i: None, propose_now=propose_now))
    page, data = tab.open(image_id, None, SimpleNamespace(username="ann", session_hash="t1"))
    token = data["token"]
    out = tab.canvas_edit({"token": token, "op": "refresh", "seq": 1})
    assert calls == [] and "read this image's labels again" in out["message"]  # up to date: no model run
    out = tab.canvas_edit({"token": token, "op": "propose_again", "seq": 2})
    assert calls == [image_id] and "1 new proposal(s)" in out["message"] and not out.get("ended")
    assert page.session is not None and len(page.session.instances) == 1
    assert tab.canvas_edit({"token": token, "op": "accept", "index": 0, "seq": 3})["seq"] == 3  # the page goes on
