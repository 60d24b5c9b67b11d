"""An image the canvas cannot send is named with the reason on the page, never a silent black picture, and a
thin strip it can send is drawn (issue 19): headless Debian Chromium against the app (no model needed)."""

import pytest

from tests.annotator.test_browser import CHROMIUM, ST, launch  # noqa: F401 - skips the module without Chromium
from tests.helpers import legacy_image

from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.browser


def _jump(page, image_id: int) -> None:
    page.locator("#jump-id").get_by_role("textbox").fill(str(image_id))
    page.locator("#btn-open").click()
    expect(page.locator("#label-canvas .mlc-info")).to_contain_text(f"Image {image_id} ")


def test_the_page_names_why_a_picture_cannot_be_shown_and_draws_a_thin_strip(running_app):
    store, url = running_app
    wide = legacy_image(store, 70000, 40, status="done", name="wide.png")  # (done: out of the label queue)
    thin = legacy_image(store, 2, 5000, status="done", name="thin.png")
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(url)
        expect(page.locator("#label-canvas canvas")).to_be_visible(timeout=60_000)
        page.wait_for_function(f"{ST} && {ST}.answerDrawnAt > 0")
        _jump(page, wide)
        expect(page.locator("#label-canvas .mlc-message")).to_have_text(
            f"image {wide} (wide.png, 70000x40) cannot be shown: a side over 32767 pixels is wider than a browser "
            "canvas")
        _jump(page, thin)
        page.wait_for_function(f"{ST}.picture.levels.length > 0 && {ST}.picture.levels[0].bmp.height === 5000")
        expect(page.locator("#label-canvas .mlc-message")).to_have_text("")
        browser.close()
