"""Open pages are bounded (issue 19): they end when idle, when their tab closes, when their login logs out,
and when the server-wide or per-user budget needs room (least recently used first); an ended page holds
nothing and its next request says to reload. /label_image keeps nothing after it answers."""

import gc
import weakref
from types import SimpleNamespace

from annotator import canvas
from annotator.labeling import LabelSession
from annotator.page import Page, PageLimits, Pages
from db import annotations
from tests.annotator.test_labeling import _busiest_image, proposed_store  # noqa: F401 - fixture


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _page(store, token, user="ann", image_id=1):
    return Page(token, user=user, session=LabelSession(store, image_id))


def test_idle_pages_end_and_free_their_session(proposed_store):
    clock, ended = Clock(), []
    pages = Pages(PageLimits(idle_seconds=60), clock=clock, on_end=ended.append)
    a = _page(proposed_store, "a")
    ref = weakref.ref(a.session)
    pages.add(a)
    clock.t += 30
    assert pages.get("a") is a  # used: its idle time starts again
    clock.t += 59
    pages.add(_page(proposed_store, "b"))
    assert "a" in pages
    clock.t += 61
    assert pages.get("a") is None and pages.get("b") is None and ended == [a, pages_b := ended[1]]
    assert a.session is None and "idle for over 1 minutes" in a.ended and "reload" in a.ended
    assert pages_b.token == "b"
    gc.collect()
    assert ref() is None  # nothing holds the ended page's labels any more


def test_the_server_budget_and_each_users_budget_end_the_least_recently_used(proposed_store):
    pages = Pages(PageLimits(max_pages=3, max_per_user=2), clock=Clock())
    a1, a2, b1, c1 = (_page(proposed_store, t, u) for t, u in (("a1", "ann"), ("a2", "ann"), ("b1", "bob"),
                                                                ("c1", "cid")))
    for p in (a1, a2, b1):
        pages.add(p)
    pages.get("a1")  # ann's first page is used again: a2 is now the least recently used
    pages.add(c1)
    assert "a2" not in pages and a2.session is None and "too many open pages" in a2.ended
    pages.add(_page(proposed_store, "a3"))  # the server's budget again: bob's page is the least recently used
    assert "b1" not in pages and {"a1", "c1", "a3"} == {t for t in ("a1", "a3", "b1", "c1") if t in pages}
    pages.add(_page(proposed_store, "a4"))  # ann's third page: her least recently used one ends
    assert "a1" not in pages and "more than 2 pages open" in a1.ended
    assert {"c1", "a3", "a4"} == {t for t in ("a1", "a3", "a4", "c1") if t in pages}


def test_a_byte_budget_ends_pages_before_memory_runs_out(proposed_store):
    pages = Pages(PageLimits(max_bytes=1), clock=Clock())
    a, b = _page(proposed_store, "a"), _page(proposed_store, "b")
    pages.add(a)
    pages.add(b)  # over the budget: the older page ends, the newest always stays
    assert "a" not in pages and "b" in pages and a.session is None


def test_logout_and_a_closed_tab_end_their_pages(proposed_store):
    pages = Pages(PageLimits(), clock=Clock())
    a, b, c = _page(proposed_store, "a", "ann"), _page(proposed_store, "b", "bob"), _page(proposed_store, "c", "ann")
    a.browser, b.browser, c.browser = "tab1", "tab2", "tab3"
    for p in (a, b, c):
        pages.add(p)
    assert pages.end_where(lambda p: p.user == "ann", "you logged out") == 2
    assert a.ended == c.ended == "you logged out" and "b" in pages
    assert pages.end_where(lambda p: p.browser == "tab2", "closed") == 1 and len(pages) == 0


def test_the_label_tab_answers_an_ended_page_with_reload_and_opening_again_works(proposed_store):
    from annotator.label_tab import LabelTab

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None),
                   limits=PageLimits(idle_seconds=60))
    clock = Clock()
    tab.pages.clock = clock
    image_id = _busiest_image(proposed_store)
    page, data = tab.open(image_id, None, request=SimpleNamespace(username="ann", session_hash="h1"))
    token = data["token"]
    assert tab.canvas_edit({"token": token, "op": "accept", "index": data["selected"], "seq": 1})["seq"] == 1
    clock.t += 120
    gone = tab.canvas_edit({"token": token, "op": "accept", "index": 0, "seq": 2})
    assert gone["ended"] and "reload the page" in gone["message"] and page.session is None
    _, data = tab.step(annotations.QUEUE_FILTERS[0], page, +1)  # Next from the same page starts it afresh
    assert page.session is not None and data["token"] == token
    assert tab.end_browser("h1") == 1 and page.session is None  # the tab closed


def test_label_image_keeps_nothing_after_it_answers(proposed_store):
    from annotator.routes import label_image

    seen = []
    real = LabelSession.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        seen.append(weakref.ref(self))

    LabelSession.__init__ = spy
    try:
        image_id = _busiest_image(proposed_store)
        got = label_image(proposed_store, None, image_id, [{"op": "accept", "index": 0}] * 3, "ann", "labeler")
    finally:
        LabelSession.__init__ = real
    assert got["messages"][0].startswith("accepted")
    gc.collect()
    assert seen and all(r() is None for r in seen)


def test_each_login_edits_within_its_rate_and_heavy_strokes_cost_more():
    from annotator.page import EditRate

    clock = Clock()
    rate = EditRate(per_second=10, burst=20, clock=clock)
    accept = {"op": "accept", "index": 0}
    assert all(rate.take("ann", canvas.cost(accept)) == 0 for _ in range(195))  # a tenth of a unit each
    assert any(rate.take("ann", canvas.cost(accept)) > 0 for _ in range(10))
    assert rate.take("bob", 1.0) == 0  # bob has a budget of his own
    big = {"op": "stroke", "radius": 1024, "points": [[0, 0]] * 30}
    assert canvas.cost(big) > 10 and canvas.cost({"op": "stroke", "radius": 10, "points": [[0, 0]] * 50}) < 0.2
    clock.t += 2
    assert rate.take("ann", canvas.cost(big)) == 0 and rate.take("ann", canvas.cost(big)) > 0
    assert canvas.cost({"op": "stroke", "radius": float("nan"), "points": "x"}) == 0.1  # refused later, by name


def test_the_label_tab_refuses_a_flood_of_edits_and_applies_nothing_of_it(proposed_store):
    from annotator.label_tab import LabelTab
    from annotator.page import EditRate

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None))
    tab.rate = EditRate(per_second=0.001, burst=0.35, clock=Clock())
    page, data = tab.open(_busiest_image(proposed_store), None)
    got = [tab.canvas_edit({"token": data["token"], "op": "accept", "index": k, "seq": k + 1}) for k in range(4)]
    assert "too many edits too fast" in got[3]["message"] and got[3]["seq"] == 4
    assert [s for s in page.session.instances.states].count("accepted") == 3


def test_many_users_opening_and_editing_at_once_within_small_budgets_never_deadlock(proposed_store):
    import threading

    from annotator.label_tab import LabelTab

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None),
                   limits=PageLimits(max_pages=3, max_per_user=1))
    ids = annotations.queue(proposed_store)[:6]
    errors = []

    def user(k: int):
        try:
            req = SimpleNamespace(username=f"u{k % 4}", session_hash=f"s{k}")
            page = None
            for r in range(6):
                page, data = tab.open(ids[(k + r) % len(ids)], page, request=req)
                if data.get("token"):
                    tab.canvas_edit({"token": data["token"], "op": "select", "index": 0, "seq": r + 1})
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(e))

    threads = [threading.Thread(target=user, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert len(tab.pages) <= 3


def test_an_open_untouched_tab_still_idles_and_an_ended_page_is_told_why(proposed_store):
    from annotator.access import Roles
    from annotator.label_tab import LabelTab

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None),
                   Roles(proposed_store, admins=["ann"], login=True), limits=PageLimits(idle_seconds=60, max_per_user=1))
    clock = Clock()
    tab.pages.clock = clock
    image_id = _busiest_image(proposed_store)
    ann = SimpleNamespace(username="ann")  # the login the canvas's calls carry
    page, data = tab.open(image_id, None, request=SimpleNamespace(username="ann", session_hash="t1"))
    for _ in range(30):  # the canvas's presence poll every 3 s: the tab is there, nobody uses it
        clock.t += 3
        tab.canvas_presence({"token": data["token"], "browser": "b"}, ann)
    gone = tab.canvas_edit({"token": data["token"], "op": "accept", "index": 0, "seq": 1}, ann)
    assert gone["ended"] and "idle for over 1 minutes" in gone["message"]
    a, da = tab.open(image_id, None, request=SimpleNamespace(username="ann", session_hash="t2"))
    b, db_ = tab.open(image_id, None, request=SimpleNamespace(username="ann", session_hash="t3"))
    said = tab.canvas_edit({"token": da["token"], "op": "view", "seq": 1}, ann)
    assert said["ended"] and "more than 1 pages open" in said["message"]
    huge = tab.canvas_edit({"token": db_["token"], "op": "accept", "index": 0, "seq": 10 ** 30}, ann)
    assert huge["seq"] == 2 ** 53  # answered with a number JSON holds exactly, never an exception


def test_without_logins_each_tab_has_budgets_of_its_own(proposed_store):
    from annotator.label_tab import LabelTab

    tab = LabelTab(proposed_store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None),
                   limits=PageLimits(max_per_user=1))
    image_id = _busiest_image(proposed_store)
    pages = [tab.open(image_id, None, request=SimpleNamespace(username=None, session_hash=f"tab{k}"))[0]
             for k in range(3)]
    assert all(p.session is not None for p in pages) and len(tab.pages) == 3  # three people, no accounts
