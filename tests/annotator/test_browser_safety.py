"""In a real browser (headless Debian Chromium): user-given names containing HTML are shown as text and
never become elements, the Dataset tab draws its gallery only when it is opened, and the login form works
with the login guard in front of the app."""

import pytest
from sqlalchemy import select, update

from tests.annotator.conftest import free_port
# the same Chromium page fixture; importing it skips (or, in CI, fails) where Chromium is missing
from tests.annotator.test_browser import expect, page  # noqa: F401

pytestmark = pytest.mark.browser

TRAP = "http://127.0.0.1:1/x"
HOSTILE = f"<img src={TRAP} onerror=alert(1)> $$\\Huge{{BIG}}$$"


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory, synth_dir, store_factory):
    """A store whose image 1's file name and whose category and keypoint names hold HTML; gallery calls counted."""
    from annotator import store_view
    from annotator.server import launch
    from db.coco_import import import_coco
    from db.schema import Category, Image

    store = store_factory(tmp_path_factory.mktemp("hostile"))
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    with store.session() as s:
        s.execute(update(Image).where(Image.id == 1).values(file_name=HOSTILE + ".png"))
        for cat in list(s.execute(select(Category.id, Category.keypoints))):
            kps = [f"{HOSTILE} kp{k}" for k in range(len(cat.keypoints or []))] or None
            s.execute(update(Category).where(Category.id == cat.id).values(name=f"{HOSTILE} {cat.id}", keypoints=kps))
        s.commit()
    calls = []
    real = store_view.gallery
    mp = pytest.MonkeyPatch()
    mp.setattr(store_view, "gallery", lambda *a, **k: calls.append(a) or real(*a, **k))
    port = free_port()
    demo = launch(store, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", calls
    demo.close()
    mp.undo()
    store_factory.release(store)


def test_hostile_names_are_shown_as_text(hostile_app, page):
    url, gallery_calls = hostile_app
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if "127.0.0.1:1/" in r.url else None)
    page.goto(url)
    page.locator("#jump-id").get_by_role("textbox").fill("1")
    page.locator("#btn-open").click()
    info = page.locator("#label-canvas .mlc-info")
    expect(info).to_contain_text(HOSTILE + ".png")  # the name, literally
    expect(page.locator("#label-canvas .mlc-list")).to_contain_text(HOSTILE)  # category names in the list
    page.locator("#label-canvas .mlc-row").first.click()  # selected: its class and keypoint names in the toolbar
    expect(page.locator("#label-canvas .mlc-class-l")).to_contain_text("class of #")
    expect(page.locator("#label-canvas .mlc-class")).to_contain_text(HOSTILE)
    assert gallery_calls == []  # loading the page drew no gallery

    page.get_by_role("tab", name="Dataset").click()
    expect(page.locator("#gallery-page")).to_contain_text("page 1 of 1")
    expect(page.locator("#store-gallery")).to_contain_text(HOSTILE + ".png")
    assert len(gallery_calls) == 1
    page.locator("#categories-panel").get_by_text("Categories").click()
    expect(page.locator("#categories-table")).to_contain_text(f"{HOSTILE} kp0")
    page.get_by_label("Name", exact=True).fill(HOSTILE + " new")
    page.locator("#btn-category-save").click()
    expect(page.locator("#category-message")).to_contain_text(f"'{HOSTILE} new'")

    assert page.locator(".katex").count() == 0  # text between dollars stays text
    assert page.locator(f'img[src="{TRAP}"]').count() == 0
    assert page.locator("img[onerror]").count() == 0
    assert fetched == []


@pytest.fixture(scope="module")
def login_app(tmp_path_factory, synth_dir, store_factory):
    from annotator.server import launch
    from db.coco_import import import_coco

    store = store_factory(tmp_path_factory.mktemp("login"))
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    port = free_port()
    demo = launch(store, port=port, block=False, auth=["alice:secret"])
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    store_factory.release(store)


def test_login_form_refuses_a_wrong_password_and_lets_the_right_one_in(login_app, page):
    page.goto(login_app)
    page.get_by_label("username").fill("alice")
    page.get_by_label("password").fill("wrong")
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text("Incorrect Credentials")).to_be_visible()
    page.get_by_label("username").fill("alice")  # the form clears its fields after a refusal
    page.get_by_label("password").fill("secret")
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#label-canvas .mlc-message")).to_contain_text("Nothing more in this queue")  # its load events ran
