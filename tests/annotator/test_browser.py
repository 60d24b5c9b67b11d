"""End to end in a real browser: headless Debian Chromium driven by Playwright, against the app on a
temporary store with synthetic images and a tiny trained model."""

import os
import re
import shutil
from pathlib import Path

import pytest
from pycocotools.coco import COCO



CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.model_only]  # not in the PostgreSQL pass: a model's data, tested elsewhere on it

if not Path(CHROMIUM).exists():
    if os.environ.get("MASKLOOP_REQUIRE_BROWSER"):
        raise RuntimeError("Chromium is required (apt-get install -y chromium) but /usr/bin/chromium is missing")
    # a developer without Chromium may skip; CI sets MASKLOOP_REQUIRE_BROWSER, which makes this a failure above
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402


def launch(p):
    """Debian's headless Chromium (``p``: a sync_playwright()), without the background traffic tests avoid."""
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])


@pytest.fixture(scope="module")
def page():
    with sync_playwright() as p:
        browser = launch(p)
        pg = browser.new_page(viewport={"width": 1500, "height": 1200}, accept_downloads=True)
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


ST = "document.querySelector('#label-canvas .mlc-root').__maskloop"  # canvas.js's state, for tests


def canvas_state(page, expr: str):
    return page.evaluate(f"(() => {{ const S = {ST}; return {expr}; }})()")


def idle(page) -> None:
    """Every edit the canvas sent has been answered and drawn."""
    page.wait_for_function(f"(() => {{ const S = {ST}; return S && S.data && S.picture.levels.length > 0 && "
                           "S.queue.sentAt.size === 0 && !S.queue.outbox.length && S.queue.inflight == null; })()")


def to_screen(page, x: float, y: float) -> tuple[float, float]:
    """Image pixels -> page coordinates, through the canvas's current zoom and pan."""
    box = page.locator("#label-canvas canvas").bounding_box()
    v = canvas_state(page, "S.view")
    return box["x"] + x * v["s"] + v["tx"], box["y"] + y * v["s"] + v["ty"]


def drag(page, points: list[tuple[float, float]], button: str = "left") -> None:
    """A mouse drag through image points (pressed at the first, released at the last)."""
    page.mouse.move(*to_screen(page, *points[0]))
    page.mouse.down(button=button)
    for p in points[1:]:
        page.mouse.move(*to_screen(page, *p), steps=4)
    page.mouse.up(button=button)


def key_over_canvas(page, key: str) -> None:
    """Canvas keys work while the pointer is over the picture."""
    box = page.locator("#label-canvas canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 3, box["y"] + 3)
    page.keyboard.press(key)


def message(page):
    return page.locator("#label-canvas .mlc-message")


def instance(page, index: int) -> dict:
    return canvas_state(page, f"S.data.instances.find((it) => it.i === {index})")


def _open(page, image_id: int) -> None:
    """Open an image by id and wait for the canvas to draw the answer (also when it was open already)."""
    page.wait_for_function(f"{ST} && {ST}.answerDrawnAt > 0")  # the page's first answer is drawn
    before = canvas_state(page, "S.answerDrawnAt")
    page.locator("#jump-id").get_by_role("textbox").fill(str(image_id))
    page.locator("#btn-open").click()
    page.wait_for_function(f"{ST}.answerDrawnAt > {before}")
    expect(page.locator("#label-canvas .mlc-info")).to_contain_text(f"Image {image_id} ")
    idle(page)


def test_label_fine_tune_and_export_in_a_real_browser(app_with_model, page, tmp_path):
    store, url, image_id = app_with_model
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    _open(page, image_id)
    first = canvas_state(page, "S.selection.index")
    assert first is not None  # opening selects the best unreviewed proposal

    key_over_canvas(page, "a")  # accept, and the next unreviewed one is selected
    idle(page)
    assert instance(page, first)["state"] == "accepted"
    second = canvas_state(page, "S.selection.index")
    assert second not in (None, first)
    key_over_canvas(page, "r")
    idle(page)
    assert instance(page, second)["state"] == "rejected"

    page.locator(f"#label-canvas .mlc-row[data-index='{first}']").click()  # paint on the accepted mask
    key_over_canvas(page, "b")
    drag(page, [(3, 3), (12, 3)])
    idle(page)
    assert instance(page, first)["edited"]

    key_over_canvas(page, "Escape")  # nothing selected: the polygon becomes a new person, then a keypoint on it
    page.locator("#label-canvas .mlc-class").select_option("1")
    key_over_canvas(page, "g")
    for x, y in ((76, 76), (115, 76), (115, 115)):
        page.mouse.click(*to_screen(page, x, y))
    key_over_canvas(page, "Enter")
    idle(page)
    expect(message(page)).to_contain_text("new instance #")
    person = canvas_state(page, "S.selection.index")
    key_over_canvas(page, "k")
    expect(page.locator("#label-canvas .mlc-kp")).to_have_value("nose")
    page.mouse.click(*to_screen(page, 100, 90))
    idle(page)
    expect(message(page)).to_contain_text("nose placed")
    assert instance(page, person)["keypoints"][:3] == [100, 90, 2]

    page.locator("#btn-save").click()
    expect(message(page)).to_contain_text(f"saved image {image_id}")
    expect(message(page)).to_contain_text("not reviewed yet")  # the unseen proposals stay proposals
    key_over_canvas(page, "R")  # reject the rest
    idle(page)
    key_over_canvas(page, "s")
    expect(message(page)).to_contain_text(f"saved image {image_id}: done")

    page.reload()
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    _open(page, image_id)
    expect(page.locator("#label-canvas .mlc-info")).to_contain_text("status done")
    assert instance(page, first)["state"] == "accepted" and instance(page, second)["state"] == "rejected"
    assert instance(page, person)["keypoints"][:3] == [100, 90, 2]

    page.get_by_role("tab", name="Model").click()
    # the saves above, drawn as soon as the tab shows: one version's points, and round ticks (a plot drawn while
    # its tab was hidden lost its points and took the values for its ticks)
    for plot in ("#corrections-plot", "#seconds-plot"):
        page.wait_for_function(f"document.querySelectorAll('{plot} svg .mark-symbol path').length > 0")
        ticks = page.locator(f"{plot} svg .role-axis-label text").evaluate_all("ts => ts.map(t => t.textContent)")
        assert all(re.fullmatch(r"v\d+|\d+(\.\d{1,2})?", t) for t in ticks), (plot, ticks)
    page.locator("#train-minutes input").fill("0.1")
    expect(page.locator("#train-epochs input")).to_have_value("0")  # 0: the 6 seconds decide, not epochs
    page.locator("#btn-finetune").click()
    status = page.locator("#job-status")
    expect(status).to_contain_text(re.compile(r"running|evaluating|done"), timeout=90_000)
    expect(status).to_contain_text(re.compile(r"done — version \d+"), timeout=180_000)
    reviews = page.locator("#reviews-table")  # the saves above, counted for the version that proposed
    expect(reviews).to_contain_text("v1")
    row = reviews.get_by_role("row").filter(has_text=re.compile(r"^\s*v1\b")).first  # (also beside a "no model" row)
    expect(row).to_contain_text("0%")  # one proposal accepted but edited, the others rejected: none unchanged
    expect(page.locator("#seconds-plot")).to_be_visible()
    expect(page.locator("#corrections-note")).to_contain_text("paid off")

    page.get_by_role("tab", name="Export").click()
    page.locator("#export-button").click()
    link = page.locator("#export-file a").first
    expect(link).to_be_visible()
    with page.expect_download() as dl:
        link.click()
    out = tmp_path / "export.json"
    shutil.copyfile(dl.value.path(), out)
    coco = COCO(str(out))
    mine = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    assert len(mine) >= 2  # the accepted, edited proposal and the new person
    person = [a for a in mine if a["category_id"] == 1 and (a.get("keypoints") or [])[:3] == [100, 90, 2]]
    assert len(person) == 1 and person[0]["num_keypoints"] == 1
    for a in mine:
        assert coco.annToMask(a).sum() == a["area"]


def test_propose_again_refreshes_the_open_image_in_place(app_with_model, page):
    from db import annotations

    store, url, image_id = app_with_model
    page.goto(url)
    expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
    other = next(i for i in annotations.queue(store) if i != image_id)
    _open(page, other)
    page.locator("#btn-propose-again").click()
    expect(message(page)).to_contain_text("new proposal(s) from the active model", timeout=60_000)
    idle(page)
    n = canvas_state(page, "S.data.instances.length")
    assert n == len(annotations.load(store, other).annotations)  # the store's new proposals, drawn
    if n:
        key_over_canvas(page, "a")  # the page goes on (it used to say its session was gone, and go blank)
        idle(page)
        expect(message(page)).not_to_contain_text("gone")
        assert any(it["state"] == "accepted" for it in canvas_state(page, "S.data.instances"))
