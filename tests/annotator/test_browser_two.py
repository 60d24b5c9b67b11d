"""Two people on one image, in two real browsers (two Chromium contexts, logged in as alice and bob): each is
told the other has the image open; both edit; alice saves; bob's save is refused, and bob sees alice's labels
with his own refused edits listed beside them, re-applies them one by one and saves. The store is checked."""

import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.annotator.conftest import free_port
# Chromium and the canvas helpers; importing them skips (or, in CI, fails) where Chromium is missing
from tests.annotator.test_browser import (ST, _open, canvas_state, drag, expect, idle, instance, key_over_canvas,
                                          launch, message)
from tests.annotator.test_labeling import _busiest_image

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("MASKLOOP_SHOTS")  # a folder: the test saves its screenshots there


@pytest.fixture(scope="module")
def two_user_app(tmp_path_factory, synth_dir, store_factory):
    from annotator.server import launch
    from db.coco_import import import_coco

    store = store_factory(tmp_path_factory.mktemp("two"))
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    port = free_port()
    demo = launch(store, port=port, block=False, auth=["alice:a-secret", "bob:b-secret"])
    yield store, f"http://127.0.0.1:{port}/"
    demo.close()
    store_factory.release(store)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _login(browser, url: str, user: str, password: str):
    """A browser of its own (a context: its own cookies and storage), logged in, on the Label tab."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    return ctx, page


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


def _row(store, ann_id):
    from db.schema import Annotation

    with store.session() as s:
        return s.scalars(select(Annotation).where(Annotation.id == ann_id)).first()


def _pick(page, index: int) -> None:
    page.locator(f"#label-canvas .mlc-row[data-index='{index}']").click()
    idle(page)


def test_two_browsers_on_one_image_are_told_and_the_second_save_is_kept_for_review(two_user_app, browser):
    from annotator.labeling import LabelSession
    from db import masks

    store, url = two_user_app
    image_id = _busiest_image(store)
    ann = LabelSession(store, image_id).instances.ann_ids
    x, y, z = 0, 1, 2  # alice accepts x and rejects y; bob paints on x and deletes z
    ctx_a, a = _login(browser, url, "alice", "a-secret")
    ctx_b, b = _login(browser, url, "bob", "b-secret")
    try:
        _open(a, image_id)
        _open(b, image_id)  # bob is told at once, alice within a few seconds (her canvas polls every 3 s)
        expect(b.locator("#label-canvas .mlc-presence")).to_contain_text("alice has this image open too, since",
                                                                        timeout=3_000)
        expect(a.locator("#label-canvas .mlc-presence")).to_contain_text("bob has this image open too",
                                                                        timeout=8_000)
        expect(a.locator("#label-canvas .mlc-presence")).to_contain_text("the second save will be refused")
        _shot(a, "presence.png")

        _pick(a, x)
        key_over_canvas(a, "a")
        idle(a)
        _pick(a, y)
        key_over_canvas(a, "r")
        idle(a)

        _pick(b, x)
        box = instance(b, x)["bbox"]
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        key_over_canvas(b, "b")
        drag(b, [(cx, cy), (min(95, cx + 25), cy)])
        idle(b)
        painted = instance(b, x)["area"]
        key_over_canvas(b, "v")
        _pick(b, z)
        key_over_canvas(b, "Delete")
        idle(b)

        key_over_canvas(a, "s")
        expect(message(a)).to_contain_text(f"saved image {image_id}")
        key_over_canvas(b, "s")  # refused: alice saved first
        expect(message(b)).to_contain_text(f"image {image_id} changed in the store since you opened it (alice "
                                           "saved it)")
        idle(b)
        items = b.locator("#label-canvas .mlc-pitem")
        expect(items).to_have_count(2)
        expect(b.locator("#label-canvas .mlc-pending")).to_contain_text("alice saved this image at")
        assert instance(b, x)["state"] == "accepted" and instance(b, y)["state"] == "rejected"  # alice's labels
        assert instance(b, x)["area"] != painted
        edited = items.filter(has_text="you edited")
        expect(edited).to_contain_text(f"yours: {instance(b, x)['name']} · {round(painted)} px · accepted")
        expect(edited).to_contain_text("theirs (alice, ")
        expect(items.filter(has_text="you deleted")).to_contain_text("yours: deleted")
        edited.hover()
        _shot(b, "conflict.png")

        edited.get_by_role("button", name="Re-apply").click()  # one by one
        idle(b)
        expect(items).to_have_count(1)
        assert instance(b, x)["area"] == painted
        items.first.get_by_role("button", name="Re-apply").click()
        idle(b)
        expect(items).to_have_count(0)
        assert instance(b, z) is None
        key_over_canvas(b, "s")
        expect(message(b)).to_contain_text(f"saved image {image_id}")

        first = _row(store, ann[x])
        m = masks.decode(first.segmentation, 96, 96)
        assert first.reviewed_by == "bob" and first.review_state == "accepted" and m.sum() == painted
        assert _row(store, ann[y]).review_state == "rejected"  # alice's, which bob did not touch
        assert _row(store, ann[z]) is None and np.any(m)

        other = next(i for i in range(1, 13) if i != image_id)
        _open(b, other)  # bob moves on: alice's notice goes at her next poll; she hears that he saved since
        notice = a.locator("#label-canvas .mlc-presence")
        expect(notice).not_to_contain_text("bob has this image open", timeout=8_000)
        expect(notice).to_contain_text("This image's labels changed in the store since you opened it")
        notice.get_by_role("button", name="Refresh (keeps your edits)").click()  # his labels, read again
        idle(a)
        expect(message(a)).to_contain_text("read this image's labels again")
        from db import annotations

        assert instance(a, x)["area"] == painted  # bob's paint
        assert canvas_state(a, "S.data.instances.length") == len(annotations.load(store, image_id).annotations)
        expect(notice).to_have_text("", timeout=8_000)
    finally:
        ctx_a.close()
        ctx_b.close()


def test_a_second_tab_of_the_same_browser_is_named_as_such(two_user_app, browser):
    store, url = two_user_app
    image_id = _busiest_image(store)
    ctx, one = _login(browser, url, "alice", "a-secret")
    try:
        two = ctx.new_page()
        two.goto(url)
        expect(two.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
        _open(one, image_id)
        _open(two, image_id)
        expect(two.locator("#label-canvas .mlc-presence")).to_contain_text(
            "You have this image open in another tab too", timeout=3_000)
        expect(one.locator("#label-canvas .mlc-presence")).to_contain_text(
            "You have this image open in another tab too", timeout=8_000)
        assert canvas_state(one, "S.presence.length") == 1
    finally:
        ctx.close()


def _shown(page) -> int:
    idle(page)
    return canvas_state(page, "S.data.image_id")


def _next(page) -> int:
    """Finish the image (reject what is left; moving on saves it) and press n."""
    key_over_canvas(page, "R")
    idle(page)
    before = canvas_state(page, "S.answerDrawnAt")
    key_over_canvas(page, "n")
    page.wait_for_function(f"(() => {{ const S = {ST}; return S.answerDrawnAt > {before}; }})()")
    return _shown(page)


def test_two_labelers_pressing_next_are_handed_different_images(two_user_app, browser):
    from db import annotations, claims

    store, url = two_user_app
    queue = annotations.queue(store)  # (before they finish any)
    ctx_a, a = _login(browser, url, "alice", "a-secret")
    ctx_b, b = _login(browser, url, "bob", "b-secret")
    try:
        seen_a, seen_b = [_shown(a)], [_shown(b)]
        for _ in range(3):
            seen_a.append(_next(a))
            seen_b.append(_next(b))
            assert seen_a[-1] != seen_b[-1]  # never both on one image
        assert not set(seen_a) & set(seen_b), (seen_a, seen_b)  # nor ever handed one the other finished
        for seen in (seen_a, seen_b):  # each walks forward through the queue, passing over the other's
            assert seen == sorted(seen, key=queue.index)
        assert claims.holder(store, seen_a[-1]).user == "alice" and claims.holder(store, seen_b[-1]).user == "bob"
        assert claims.holder(store, seen_a[0]) is None  # she moved on: free again
        # the Dataset tab says who holds what
        a.get_by_role("tab", name="Dataset").click()
        a.locator("#holds-panel").get_by_text("Who holds what").click()
        a.locator("#refresh-store").click()
        table = a.locator("#holds-table")
        expect(table).to_contain_text("alice")
        expect(table).to_contain_text(str(seen_b[-1]))
        # the review queue's filters show with it
        a.get_by_role("tab", name="Label").click()
        expect(a.locator("#review-by")).to_be_hidden()
        a.locator("#queue-filter input").click()
        a.get_by_role("option", name=annotations.TO_REVIEW).click()
        expect(a.locator("#review-by")).to_be_visible()
        expect(a.locator("#review-days")).to_be_visible()
    finally:
        ctx_a.close()
        ctx_b.close()
