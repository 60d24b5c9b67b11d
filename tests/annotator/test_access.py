"""Issue 21, access: every request is checked against the account as it is now (a removed account or a changed
password is logged out at its next request, reads included)."""


import httpx
import pytest
from gradio_client import Client

from annotator import access
from annotator.ui import launch
from db import annotations, users
from db.coco_import import import_coco
from db.schema import MAX_ID
from tests.annotator.conftest import free_port

PW = {"lena": "lena-labels", "ada": "ada-admins", "adam": "adam-admins", "root": "root-secret"}


@pytest.fixture(scope="module")
def cheap_kdf():
    mp = pytest.MonkeyPatch()
    mp.setattr(users, "SCRYPT_N", 2 ** 10)  # verify reads the cost from each stored hash
    yield
    mp.undo()


@pytest.fixture(scope="module")
def access_app(tmp_path_factory, synth_dir, cheap_kdf, store_factory):
    """The app with accounts in its store and an --auth admin."""
    store = store_factory(tmp_path_factory.mktemp("access"))
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    for name, role in (("lena", "labeler"), ("ada", "admin"), ("adam", "admin")):
        users.add(store, name, role, PW[name])
    port = free_port()
    demo = launch(store, port=port, block=False, auth=["root:root-secret"])
    yield demo, f"http://127.0.0.1:{port}", store
    demo.close()
    store_factory.release(store)


def _board(demo) -> int:
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "label-canvas")._id


def _call(h: httpx.Client, demo, fn: str, data, session_hash: str = "made-up") -> httpx.Response:
    """One of the canvas's server functions, as canvas.js calls it."""
    return h.post("/gradio_api/component_server", json={"session_hash": session_hash, "component_id": _board(demo),
                                                        "fn_name": fn, "data": data})


def _http(url: str, name: str, password: str | None = None) -> httpx.Client:
    h = httpx.Client(base_url=url, timeout=60)
    assert h.post("/login", data={"username": name, "password": password or PW[name]}).status_code == 200
    return h


def _client(url: str, name: str, password: str | None = None) -> Client:
    return Client(url + "/", auth=(name, password or PW[name]), verbose=False, download_files=False)


def _as(url: str, client: Client) -> httpx.Client:
    """Raw HTTP with a gradio_client's login session (its cookies)."""
    return httpx.Client(base_url=url, timeout=60, cookies=client.cookies)


def test_a_removed_account_is_logged_out_at_its_next_request_reads_included(access_app):
    demo, url, store = access_app
    users.add(store, "leo", "labeler", "leo-labels")
    leo = _client(url, "leo", "leo-labels")
    mine = leo.predict(api_name="/first")  # leo's page, on an image
    lena = _client(url, "lena")
    hers = lena.predict(str(mine["image_id"]), api_name="/open_id")  # lena on the same image
    leo_http, lena_http = _as(url, leo), _as(url, lena)
    seen = _call(lena_http, demo, "canvas_presence", {"token": hers["token"], "browser": "lena-b"}).json()
    assert [o["user"] for o in seen["others"]] == ["leo"]
    assert "url" in _call(leo_http, demo, "canvas_image", 3).json()  # any image, any session hash: a labeler may look
    assert leo.predict(api_name="/refresh_store")

    users.remove(store, "leo")
    first = _call(leo_http, demo, "canvas_image", 3)
    assert first.status_code == 401 and "the account 'leo' was removed" in first.json()["detail"]
    for r in (_call(leo_http, demo, "canvas_image", 4, "another-made-up"),
              _call(leo_http, demo, "canvas_presence", {"token": mine["token"], "browser": "leo-b"}),
              leo_http.get("/gradio_api/login_check"), leo_http.get("/gradio_api/info"),
              leo_http.get(f"/gradio_api/file={next(store.settings.store_dir.rglob('*.png'))}"),
              leo_http.post("/gradio_api/upload", files={"files": ("a.png", b"x" * 10)})):
        assert r.status_code == 401, (r.request.url, r.status_code, r.text[:200])
    with pytest.raises(Exception):
        leo.predict(api_name="/refresh_store")  # the gallery's and the tables' reads: a queued event
    assert mine["token"] not in demo.label_tab.pages  # leo's page ended: nobody is told leo is there
    seen = _call(lena_http, demo, "canvas_presence", {"token": hers["token"], "browser": "lena-b"}).json()
    assert seen["others"] == [] and seen["image_id"] == mine["image_id"]
    bad = httpx.post(url + "/login", data={"username": "leo", "password": "leo-labels"})
    assert bad.status_code == 400


def test_a_changed_password_ends_the_sessions_opened_with_the_old_one_only(access_app):
    demo, url, store = access_app
    users.add(store, "pat", "labeler", "pat-old-password")
    old = _client(url, "pat", "pat-old-password")
    old_page = old.predict(api_name="/first")
    image = old_page["image_id"]
    before = annotations.images(store, [image])[image].row_version
    users.set_password(store, "pat", "pat-new-password")
    new = _client(url, "pat", "pat-new-password")  # logged in again before the old page's next request
    new_page = new.predict(str(image), api_name="/open_id")

    save = _call(_as(url, old), demo, "canvas_edit", {"token": old_page["token"], "op": "save", "seq": 1})
    assert save.status_code == 401 and "password of 'pat' was changed" in save.json()["detail"]
    with pytest.raises(Exception):
        old.predict(image, [{"op": "reject_rest"}, {"op": "save"}], api_name="/label_image")
    assert annotations.images(store, [image])[image].row_version == before  # nothing the old session sent was saved
    assert old_page["token"] not in demo.label_tab.pages and new_page["token"] in demo.label_tab.pages
    done = new.predict(image, [{"op": "reject_rest"}, {"op": "save"}], api_name="/label_image")
    assert done["status"] == "done"
    assert httpx.post(url + "/login", data={"username": "pat", "password": "pat-old-password"}).status_code == 400


def test_a_session_stands_on_the_stamp_of_the_hash_its_password_was_checked_against(store, cheap_kdf):
    """The stamp is taken with the very check of the password: a change between the check and the session's
    registration cannot leave the old password's session standing."""
    users.add(store, "kim", "labeler", "kim-password")
    stamp = users.login_stamp(store, "kim", "kim-password")
    assert stamp == users.stamp(store, "kim") and users.login_stamp(store, "kim", "wrong-password") is None
    sessions = access.Sessions(lambda name: users.stamp(store, name))
    sessions.started("tok", "kim", stamp)
    assert sessions.why_not("tok") == "" and sessions.name("tok") == "kim"
    assert sessions.token_in({"access-token-unsecure-abc": "tok", "other": "tok2"}) == "tok"
    users.set_role(store, "kim", "reviewer")  # a role is read on every check: the session stands
    assert sessions.why_not("tok") == ""
    users.set_password(store, "kim", "kim-password")  # the same password again: a new salt, a new stamp
    assert "password of 'kim' was changed" in sessions.why_not("tok")
    sessions.started("tok", "kim", users.stamp(store, "kim"))
    users.remove(store, "kim")
    users.add(store, "kim", "labeler", "kim-password")  # removed and added again: not the same account
    assert "password of 'kim' was changed" in sessions.why_not("tok")
    users.remove(store, "kim")
    assert "was removed" in sessions.why_not("tok") and "not known" in sessions.why_not("never-seen")
    assert access.Sessions.key("tok") != "tok" and access.Sessions.key(None) == ""


def test_canvas_image_needs_the_login_and_answers_a_bad_id_with_a_message(access_app):
    demo, url, _ = access_app
    assert _call(httpx.Client(base_url=url, timeout=30), demo, "canvas_image", 1).status_code == 401
    lena = _http(url, "lena")
    assert _call(lena, demo, "canvas_image", 1).json()["url"].startswith("data:image/")
    for bad, says in (("x", "image id 'x' is not an integer"), (1.5, "not an integer"), (True, "not an integer"),
                      (None, "not an integer"), ("y" * 10_000, "is not an integer"), (2 ** 70, f"outside 1..{MAX_ID}"),
                      (0, "outside"), (99_999, "no image with id 99999")):
        r = _call(lena, demo, "canvas_image", bad)
        assert r.status_code == 200 and says in r.json()["error"] and len(r.json()["error"]) < 200, (bad, r.text[:300])
