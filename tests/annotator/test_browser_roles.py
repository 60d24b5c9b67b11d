"""Roles in a real browser (headless Debian Chromium): each login sees only what its role may do, a reviewer
sends a labeler's save back with a note from the Label tab, and the labeler sees it on the image."""

import pytest

from tests.annotator.conftest import free_port
# the same Chromium page fixture; importing it skips (or, in CI, fails) where Chromium is missing
from tests.annotator.test_browser import expect, page  # noqa: F401
from tests.annotator.test_roles import PASSWORDS, _team, cheap_kdf  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def roles_url(tmp_path_factory, synth_dir, cheap_kdf, store_factory):  # noqa: F811
    from annotator.server import launch
    from db.coco_import import import_coco

    store = store_factory(tmp_path_factory.mktemp("roles"))
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    _team(store)
    port = free_port()
    demo = launch(store, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    store_factory.release(store)


def _login(page, url, name):  # noqa: F811
    ctx = page.context.browser.new_context(viewport={"width": 1440, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(url)
    pg.get_by_label("username").fill(name)
    pg.get_by_label("password").fill(PASSWORDS[name])
    pg.get_by_role("button", name="Login").click()
    expect(pg.locator("#who")).to_contain_text(name)
    expect(pg.locator("#label-canvas .mlc-info")).to_contain_text("Image ")
    return pg


def test_each_role_sees_its_tools_and_a_reviewer_sends_work_back(roles_url, page):  # noqa: F811
    lena = _login(page, roles_url, "lena")
    expect(lena.locator("#who")).to_contain_text("lena · labeler")
    expect(lena.locator("#review-panel")).to_be_hidden()
    lena.get_by_role("tab", name="Export").click()
    expect(lena.locator("#export-not-yours")).to_be_visible()
    expect(lena.locator("#export-button")).to_be_hidden()
    lena.get_by_role("tab", name="Model").click()
    expect(lena.locator("#versions-table")).to_be_visible()  # the versions are there to read
    expect(lena.locator("#btn-finetune")).to_be_hidden()
    expect(lena.locator("#btn-activate")).to_be_hidden()
    lena.get_by_role("tab", name="Dataset").click()
    expect(lena.locator("#store-gallery")).to_be_visible()
    expect(lena.locator("#import-images")).to_be_hidden()
    expect(lena.locator("#btn-category-save")).to_be_hidden()
    lena.get_by_role("tab", name="Label").click()
    image_id = int(lena.locator("#label-canvas .mlc-info").inner_text().split()[1])
    lena.locator("#btn-reject-rest").click()
    lena.locator("#btn-save").click()
    expect(lena.locator("#label-canvas .mlc-message")).to_contain_text(f"saved image {image_id}: done")
    expect(lena.locator("#label-canvas .mlc-history summary")).to_contain_text("History (1): last lena")

    rita = _login(page, roles_url, "rita")
    expect(rita.locator("#review-panel")).to_be_visible()
    expect(rita.locator("#btn-finetune")).to_be_hidden()
    rita.locator("#queue-filter input").click()
    rita.get_by_role("option", name="to review (done, awaiting a reviewer)").click()
    expect(rita.locator("#label-canvas .mlc-info")).to_contain_text(f"Image {image_id} ")
    rita.locator("#btn-send-back").click()  # without a note: refused by name
    expect(rita.locator("#label-canvas .mlc-message")).to_contain_text("needs a note")
    rita.locator("#verdict-note textarea").fill("the person on the left is missing")
    rita.locator("#btn-send-back").click()
    expect(rita.locator("#label-canvas .mlc-verdict")).to_have_text(
        "Sent back by rita — the person on the left is missing")

    lena.locator("#jump-id input").fill(str(image_id))
    lena.locator("#jump-id input").press("Enter")
    expect(lena.locator("#label-canvas .mlc-verdict")).to_contain_text("Sent back by rita")
    lena.locator("#label-canvas .mlc-history summary").click()
    expect(lena.locator("#label-canvas .mlc-history li")).to_have_count(2)
    for pg in (lena, rita):
        pg.context.close()
