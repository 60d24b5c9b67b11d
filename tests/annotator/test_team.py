"""A team in the Label tab (issue 20): each person's Next hands them an image nobody else holds, the page holds
it while open and lets go when it moves on or ends, /next_images hands out claimed images too, and the review
queue filters by labeler and day."""

import datetime as dt
import threading
from types import SimpleNamespace

import gradio as gr
import pytest
from sqlalchemy import update

from annotator import routes
from annotator.label_tab import ANYONE, LabelTab, review_filter
from db import annotations, claims
from db.errors import UserError
from db.schema import Claim, utcnow
from tests.annotator.test_labeling import proposed_store  # noqa: F401 - fixture

FIRST = annotations.QUEUE_FILTERS[0]


def _tab(store):
    return LabelTab(store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))


def _req(user, tab_id=None):
    return SimpleNamespace(username=user, session_hash=tab_id or f"tab-{user}")


def test_two_labelers_pressing_next_are_handed_different_images(proposed_store):
    tab = _tab(proposed_store)
    queue = annotations.queue(proposed_store)
    ann, data = tab.walk(FIRST, None, _req("ann"))
    assert data["image_id"] == queue[0] and ann.claimed == queue[0]
    bob, data = tab.walk(FIRST, None, _req("bob"))
    assert data["image_id"] == queue[1]  # ann holds the first
    _, data = tab.step(FIRST, ann, +1, _req("ann"))
    assert data["image_id"] == queue[2]  # past bob's
    assert claims.holder(proposed_store, queue[0]) is None  # she moved on: free again
    _, data = tab.step(FIRST, bob, +1, _req("bob"))
    assert data["image_id"] == queue[3]
    # ann opens bob's image by its id: she may look, is told whose it is, and takes nothing from him
    _, data = tab.open(queue[3], ann, _req("ann"))
    assert "handed to bob" in data["message"] and claims.holder(proposed_store, queue[3]).user == "bob"
    assert ann.claimed is None and claims.holder(proposed_store, queue[2]) is None
    assert tab.end_browser("tab-bob") == 1  # bob's tab closes: his image is free at once
    assert claims.holder(proposed_store, queue[3]) is None


def test_a_page_keeps_its_claim_alive_while_open(proposed_store):
    tab = _tab(proposed_store)
    page, data = tab.walk(FIRST, None, _req("ann"))
    image_id = data["image_id"]
    with proposed_store.transaction() as s:  # as if the claim were about to lapse
        s.execute(update(Claim).values(until=utcnow() + dt.timedelta(seconds=1)))
    page.claim_renewed -= claims.RENEW_EVERY + 1
    tab.canvas_presence({"token": page.token, "browser": "b1"})
    assert claims.holder(proposed_store, image_id).until > utcnow() + dt.timedelta(seconds=200)


def test_many_labelers_walking_at_once_never_share_an_image(proposed_store):
    tab = _tab(proposed_store)
    shown: dict[str, list[int]] = {}
    lock = threading.Lock()
    errors = []

    def labeler(name):
        try:
            page = None
            for _ in range(4):
                page, data = tab.step(FIRST, page, +1, _req(name)) if page else tab.walk(FIRST, None, _req(name))
                if data.get("image_id") is not None:
                    with lock:
                        shown.setdefault(name, []).append(data["image_id"])
                        now = [v[-1] for v in shown.values()]
                        assert len(now) == len(set(now)), f"two people on one image: {shown}"
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(e))

    threads = [threading.Thread(target=labeler, args=(f"l{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(shown) == 4


def test_next_images_hands_each_caller_its_own_images_until_they_are_done(proposed_store):
    a = routes.next_images(proposed_store, 3, "ann")
    b = routes.next_images(proposed_store, 3, "bob")
    assert len(a) == 3 and len(b) == 3 and not set(a) & set(b)
    assert routes.next_images(proposed_store, 3, "ann") == a  # asked again: the same ones, renewed
    out = routes.label_image(proposed_store, None, a[0], [{"op": "reject_rest"}, {"op": "save"}], "ann")
    assert out["status"] == "done" and claims.holder(proposed_store, a[0]) is None
    assert a[0] not in routes.next_images(proposed_store, 3, "ann")


def test_the_review_queue_is_saves_awaiting_a_verdict_newest_first_by_labeler_and_day(proposed_store):
    ids = annotations.queue(proposed_store)[:3]
    for image_id, who in zip(ids, ("ann", "bob", "ann")):
        routes.label_image(proposed_store, None, image_id, [{"op": "reject_rest"}, {"op": "save"}], who)
    assert annotations.queue(proposed_store, annotations.TO_REVIEW) == ids[::-1]
    assert annotations.queue(proposed_store, annotations.TO_REVIEW, review_filter("ann", "")) == [ids[2], ids[0]]
    today = dt.datetime.now(dt.timezone.utc).date()
    assert annotations.queue(proposed_store, annotations.TO_REVIEW, review_filter(ANYONE, f"..{today}")) \
        == ids[::-1]
    yesterday = today - dt.timedelta(days=1)
    assert annotations.queue(proposed_store, annotations.TO_REVIEW, review_filter("bob", str(yesterday))) == []
    assert annotations.savers(proposed_store) == ["ann", "bob"]
    for bad, why in (("2026-13-01", "a date like"), ("2026-12-05..2026-12-01", "ends before it starts")):
        with pytest.raises(UserError, match=why):
            review_filter(None, bad)


def test_labels_sent_back_go_back_to_whoever_saved_them_and_reviewers_are_handed_saves(proposed_store):
    (image_id,) = routes.next_images(proposed_store, 1, "ann")
    routes.label_image(proposed_store, None, image_id, [{"op": "reject_rest"}, {"op": "save"}], "ann")
    with pytest.raises(gr.Error, match="needs the reviewer role"):
        routes.next_images(proposed_store, 5, "bob", "review", role="labeler")
    assert routes.next_images(proposed_store, 5, "rita", "review", role="reviewer") == [image_id]
    assert routes.next_images(proposed_store, 5, "rex", "review", role="reviewer") == []  # rita has it
    routes.label_image(proposed_store, None, image_id, [{"op": "send_back", "note": "the dog's tail"}], "rita",
                   role="reviewer")
    assert claims.holder(proposed_store, image_id) is None  # judged: let go
    assert image_id not in routes.next_images(proposed_store, 50, "bob")  # not bob's to fix
    assert routes.next_images(proposed_store, 1, "ann") == [image_id]  # ann's, first in her queue
    claims.release(proposed_store, "ann")
    claims.assign(proposed_store, "bob", [image_id], by="boss")  # unless an admin hands it to someone else
    assert routes.next_images(proposed_store, 1, "bob") == [image_id]
    with pytest.raises(gr.Error, match="queue 'later'"):
        routes.next_images(proposed_store, 1, "bob", "later")


def test_nobody_takes_the_whole_queue_or_writes_to_an_image_handed_to_someone_else(proposed_store, monkeypatch):
    from db import users

    mine = routes.next_images(proposed_store, 10 ** 30, "ann")
    assert len(mine) == min(claims.MAX_PER_PERSON, len(annotations.queue(proposed_store)))
    assert routes.next_images(proposed_store, 5, "ann") == mine[:5]  # her own, renewed: no more taken
    with pytest.raises(gr.Error, match=f"image {mine[0]} is handed to ann"):
        routes.label_image(proposed_store, None, mine[0], [{"op": "save"}], "bob")
    with pytest.raises(gr.Error, match="queue"):
        routes.next_images(proposed_store, 1, "bob", {"a": 1})
    done = mine[1]
    routes.label_image(proposed_store, None, done, [{"op": "reject_rest"}, {"op": "save"}], "ann")
    with pytest.raises(gr.Error, match="is done: its labels are finished"):
        routes.label_image(proposed_store, None, done, [{"op": "propose_again"}], "ann")
    monkeypatch.setattr(users, "SCRYPT_N", 2 ** 10)
    users.add(proposed_store, "ann", "labeler", "ann-password")
    with pytest.raises(UserError, match="no account named 'ghost'"):
        claims.assign(proposed_store, "ghost", [done], by="boss")
    claims.assign(proposed_store, "ann", [mine[2]], by="boss")
    users.remove(proposed_store, "ann")  # her claims and assignments go with her account
    assert claims.who_holds_what(proposed_store) == []
