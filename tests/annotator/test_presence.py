"""Who has which image open (annotator.presence): entries come with opening an image and the canvas's polls,
and go when a page moves on, says it leaves, or is silent for the time to live; memory stays bounded."""

from types import SimpleNamespace

from annotator.presence import Presence
from tests.annotator.test_labeling import _busiest_image, proposed_store  # noqa: F401 - fixture


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _presence(ttl=30.0, cap=100):
    clock = Clock()
    return Presence(ttl=ttl, cap=cap, clock=clock, wall=lambda: 1_700_000_000.0 + clock.now), clock


def test_others_on_the_same_image_are_named_with_when_they_opened_it():
    p, clock = _presence()
    p.open("a", 5, "alice", "browser-1")
    clock.now += 12
    p.open("b", 5, "bob", "browser-2")
    p.open("c", 6, "carol", "browser-3")  # another image: not counted
    (bob,) = p.others("a")
    assert bob["user"] == "bob" and bob["since"] == 1_700_000_000.0 + 1012 and not bob["same_user"]
    (alice,) = p.others("b")
    assert alice["user"] == "alice" and not alice["same_browser"]
    assert p.others("c") == [] and p.others("unknown") == []


def test_another_tab_of_the_same_browser_and_the_same_user_elsewhere_count_too():
    p, _ = _presence()
    p.open("tab1", 5, "alice", "browser-1")
    p.open("tab2", 5, "alice", "browser-1")
    p.open("laptop", 5, "alice", "browser-2")
    got = {o["same_browser"]: o for o in p.others("tab1")}
    assert got[True]["same_user"] and got[False]["same_user"]


def test_an_entry_expires_without_heartbeat_and_a_poll_keeps_it():
    p, clock = _presence(ttl=30)
    p.open("a", 5, "alice")
    p.open("b", 5, "bob")
    clock.now += 20
    p.open("a", 5, "alice")  # a's heartbeat; b stays silent
    since = p.others("b")[0]["since"]
    clock.now += 15  # b silent for 35 s: gone
    assert p.others("a") == [] and len(p) == 1
    p.open("b", 5, "bob")  # back: a new visit, from now
    clock.now += 1
    p.open("a", 5, "alice")
    assert p.others("b")[0]["since"] == since  # a kept its time on the image through its heartbeats
    assert p.others("a")[0]["since"] > since


def test_moving_to_another_image_or_leaving_clears_the_notice():
    p, _ = _presence()
    p.open("a", 5, "alice")
    p.open("b", 5, "bob")
    p.open("b", 6, "bob")
    assert p.others("a") == []
    p.open("b", 5, "bob")
    p.close("b")
    assert p.others("a") == []


def test_memory_is_bounded_the_longest_silent_go_first():
    p, clock = _presence(cap=50)
    for k in range(500):
        clock.now += 0.01
        p.open(f"t{k}", k % 7, "u")
    assert len(p) == 50
    assert p.others("t0") == []  # long gone
    assert len(p.others("t499")) == sum(1 for k in range(450, 499) if k % 7 == 499 % 7)


def test_a_poll_is_a_heartbeat_and_refuses_what_it_does_not_know():
    p, clock = _presence()
    alice = SimpleNamespace(token="a", user="alice", session=SimpleNamespace(image_id=5))  # a Page
    assert p.poll({"token": "a", "browser": "x" * 500}, alice)["others"] == []
    p.open("b", 5, "bob", "y")
    got = p.poll({"token": "a", "browser": "x"}, alice)
    assert got["image_id"] == 5 and [o["user"] for o in got["others"]] == ["bob"]
    assert p.poll({"token": "a"}, None) == {"image_id": None, "others": []}  # token of no open page
    assert p.poll("nonsense", alice)["others"] == []
    p.poll({"token": "a", "leaving": True}, alice)
    assert p.others("b") == []


def test_the_label_tab_tells_the_page_already_there_and_the_one_opening(proposed_store):
    from annotator.label_tab import LabelTab

    store = proposed_store
    image_id = _busiest_image(store)
    tab = LabelTab(store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    la, a = tab.open(image_id, None, request=SimpleNamespace(username="alice", session_hash="1"))  # (pages hold
    # their sessions in a gr.State; the tab only refers to them)
    assert tab.canvas_presence({"token": a["token"], "browser": "one"})["others"] == []
    lb, b = tab.open(image_id, None, request=SimpleNamespace(username="bob", session_hash="2"))
    told_b = tab.canvas_presence({"token": b["token"], "browser": "two"})  # the opener: at its first poll
    assert [o["user"] for o in told_b["others"]] == ["alice"] and told_b["image_id"] == image_id
    told_a = tab.canvas_presence({"token": a["token"], "browser": "one"})  # the one there: at its next poll
    assert [o["user"] for o in told_a["others"]] == ["bob"]
    lb, _ = tab.open(image_id + 1, lb)  # bob moves on
    assert tab.canvas_presence({"token": a["token"], "browser": "one"})["others"] == []
    assert tab.canvas_presence({"token": "forged"}) == {"image_id": None, "others": []}
