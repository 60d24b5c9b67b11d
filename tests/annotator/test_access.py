"""Issue 21, access: every request is checked against the account as it is now (a removed account or a changed
password is logged out at its next request, reads included); only roles that may import upload, within a
budget per login; request bodies are capped before they are read; the login's per-client delay counts the
socket's peer unless a proxy the admin named forwards; and no server opens to others without a login unless
told so by name."""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from annotator import access, canvas, limits
from annotator.routes import MAX_API_OPS
from annotator.server import launch
from db import annotations, users
from db.coco_import import import_coco
from db.errors import UserError
from db.schema import MAX_ID
from tests.annotator.conftest import free_port
from tests.stores import cli_args
from tests.annotator.test_roles import cheap_kdf  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[2]
PW = {"lena": "lena-labels", "ada": "ada-admins", "adam": "adam-admins", "root": "root-secret"}
MAX_FILE, BUDGET, FILES = 0.2, 0.25, 4  # MiB per file, MiB and files per login


@pytest.fixture(scope="module")
def access_app(tmp_path_factory, synth_dir, cheap_kdf, store_factory):
    """The app with accounts in its store, an --auth admin, small upload limits and no trusted proxy."""
    store = store_factory(tmp_path_factory.mktemp("access"))
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    for name, role in (("lena", "labeler"), ("ada", "admin"), ("adam", "admin")):
        users.add(store, name, role, PW[name])
    port = free_port()
    demo = launch(store, port=port, block=False, auth=["root:root-secret"], max_upload_mb=MAX_FILE,
                  user_upload_mb=BUDGET, user_upload_files=FILES)
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


def test_logging_out_ends_the_logins_pages_and_its_session(access_app):
    demo, url, store = access_app
    users.add(store, "lou", "labeler", "lou-labels")
    lou = _client(url, "lou", "lou-labels")
    page = lou.predict(api_name="/first")
    h = _as(url, lou)
    assert h.get("/logout", follow_redirects=False).status_code == 302
    assert page["token"] not in demo.label_tab.pages and "logged out" in demo.label_tab.pages.why_ended(page["token"])
    assert h.get("/gradio_api/login_check").status_code == 401
    assert _call(h, demo, "canvas_image", 1).status_code == 401


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


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "maskloop-test-boundary"
    parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{n}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for n, data in files)
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _raw(url: str, path: str, cookies: dict, content_type: str, chunks, declared: int | None = None) -> tuple[int, str, int]:
    """POST ``chunks`` over a bare socket (chunked unless ``declared`` is given), stopping when the server
    answers; returns (status, body, bytes sent)."""
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    framing = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{framing}\r\n"
              f"Cookie: {cookie}\r\n\r\n".encode())
    sent, got = 0, b""
    try:
        for chunk in chunks:
            s.sendall(chunk if declared is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            s.setblocking(False)
            try:
                got = s.recv(65536)
            except BlockingIOError:
                pass
            s.setblocking(True)
            if got:
                break
        else:
            if declared is None:
                s.sendall(b"0\r\n\r\n")
    except OSError:  # the server closed the connection after answering
        pass
    s.settimeout(30)
    while True:  # a refusal closes the connection after its answer
        try:
            more = s.recv(65536)
        except OSError:
            break
        if not more:
            break
        got += more
    s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace"), sent


def test_only_roles_that_may_import_upload_within_a_count_and_size_per_login(access_app):
    demo, url, _ = access_app
    lena = _http(url, "lena")
    r = lena.post("/gradio_api/upload", files={"files": ("a.png", b"x" * 100)})
    assert r.status_code == 403 and "to import images needs the admin role; lena is a labeler" in r.json()["detail"]

    ada = _http(url, "ada")
    three = [("files", (f"{k}.png", b"%d" % k)) for k in range(3)]
    assert len(ada.post("/gradio_api/upload", files=three).json()) == 3
    assert ada.post("/gradio_api/upload", files={"files": ("3.png", b"3")}).status_code == 200
    many = ada.post("/gradio_api/upload", files={"files": ("4.png", b"4")})  # the fifth file in the window
    assert many.status_code == 429 and f"{FILES} files were uploaded by this login" in many.json()["detail"]
    assert _http(url, "root").post("/gradio_api/upload", files={"files": ("r.png", b"r")}).status_code == 200

    adam = _http(url, "adam")
    size = int(0.15 * 2 ** 20)
    assert adam.post("/gradio_api/upload", files={"files": ("big1.png", b"a" * size)}).status_code == 200
    r = adam.post("/gradio_api/upload", files={"files": ("big2.png", b"b" * size)})  # declared: refused unread
    assert r.status_code == 413 and "MiB left of this login's 0.25 MiB for 1.5 hours" in r.json()["detail"]


def test_parallel_uploads_share_one_budget_counted_as_their_files_arrive(access_app):
    """Files are counted as their parts stream in, not when Gradio answers: 8 uploads of 2 files at once used
    to be checked against the same count and all kept."""
    demo, url, store = access_app
    users.add(store, "pia", "admin", "pia-admins")
    pia = _http(url, "pia", "pia-admins")

    def upload(k):
        return pia.post("/gradio_api/upload", files=[("files", (f"{k}-{j}.png", b"p" * 5000)) for j in range(2)])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(upload, range(8)))
    kept = sum(len(r.json()) for r in answers if r.status_code == 200)
    assert 2 <= kept <= FILES and {r.status_code for r in answers} <= {200, 413, 429}
    refused = [r.json()["detail"] for r in answers if r.status_code != 200]
    assert refused and all(f"{FILES} files were uploaded by this login" in why for why in refused)


def test_the_ledger_counts_bytes_and_files_per_login_until_the_window_passes():
    clock = [0.0]
    ledger = limits.UploadLedger(limits.UploadLimits(bytes_per_login=1000, files_per_login=3, window=60),
                                 clock=lambda: clock[0])
    assert ledger.take("a", 600, 2) == "" and ledger.left("a") == (400, 1) and ledger.left("b") == (1000, 3)
    assert "ran past this login's" in ledger.take("a", 500, 0)  # refused, and not counted
    assert "3 files were uploaded" in ledger.take("a", 10, 2)
    ledger.settle("a", 600, 2, kept=2)
    assert ledger.left("a") == (400, 1) and ledger.refusal("a", 401)[0] == 413 and ledger.refusal("a", 400) == (0, "")
    assert ledger.take("a", 100, 1) == ""
    ledger.settle("a", 100, 1, kept=None)  # Gradio kept nothing of it (refused, cut off): it costs nothing
    assert ledger.left("a") == (400, 1)
    ledger.settle("a", 400, 1, kept=1)
    assert ledger.refusal("a", None)[0] == 429
    clock[0] = 61
    assert ledger.left("a") == (1000, 3)
    parts = limits.FileParts()
    assert [parts.feed(c) for c in (b'name="files"; file', b'Name="x.png"\r\n', b"FILENAME=", b"")] == [0, 1, 1, 0]


def test_a_chunked_upload_past_the_budget_is_stopped_and_leaves_no_file(access_app, tmp_path):
    demo, url, store = access_app
    users.add(store, "ann", "admin", "ann-admins")
    ann = _http(url, "ann", "ann-admins")
    folder = Path(demo.app.uploaded_file_dir)
    before = {p for p in folder.rglob("*") if p.is_file()}
    body, ctype = _multipart([("c1.png", b"c" * 140_000), ("c2.png", b"d" * 140_000)])  # each under the file cap
    status, text, sent = _raw(url, "/gradio_api/upload", dict(ann.cookies), ctype,
                              (body[k:k + 16_384] for k in range(0, len(body), 16_384)))
    assert status == 413 and "ran past this login's 0.25 MiB" in text
    time.sleep(0.5)
    assert {p for p in folder.rglob("*") if p.is_file()} == before  # Gradio deleted what it had begun to write
    fits = ann.post("/gradio_api/upload", files={"files": ("fits.png", b"f" * 100_000)})
    assert fits.status_code == 200  # the refused bytes were not counted


def test_request_bodies_are_capped_before_they_are_read(access_app):
    demo, url, _ = access_app
    cookies = dict(_http(url, "lena").cookies)
    status, text, sent = _raw(url, "/gradio_api/component_server", cookies, "application/json",
                              iter([b"{" * 1000]), declared=600_000_000)
    assert status == 413 and "more than 1,048,576 bytes; an edit message of the canvas" in text and sent == 1000
    for path, cap, kind in (("/gradio_api/component_server", limits.CANVAS_BODY, "application/json"),
                            ("/gradio_api/queue/join", limits.API_BODY, "application/json"),
                            ("/gradio_api/call/label_image", limits.API_BODY, "application/json"),
                            ("/login", limits.LOGIN_BODY, "application/x-www-form-urlencoded")):
        status, text, sent = _raw(url, path, cookies, kind, (b"[" * 2 ** 20 for _ in range(600)))
        assert status == 413 and f"more than {cap:,} bytes" in text, (path, status, text)
        assert sent < cap + 16 * 2 ** 20, (path, sent)  # stopped near the cap, not after 600 MB


def test_a_file_given_by_url_is_refused_before_gradio_would_fetch_it(access_app):
    """Gradio fetches a file input given by URL into its cache before the event's function runs (and checks
    the role): past the upload route, its role check and its budget. Refused as the request arrives."""
    demo, url, _ = access_app
    fn = next(i for i, d in enumerate(demo.config["dependencies"]) if d.get("api_name") == "import_images")
    far = {"path": "https://198.51.100.7/ten-gigabytes.bin", "meta": {"_type": "gradio.FileData"}}
    for name in ("lena", "ada"):
        h = _http(url, name)
        join = {"data": [[far]], "fn_index": fn, "session_hash": "by-url", "trigger_id": None, "event_data": None}
        for path, body in (("/gradio_api/queue/join", json.dumps(join)),
                           ("/gradio_api/call/import_images", json.dumps({"data": [[far]]})),
                           ("/gradio_api/run/import_images", json.dumps({"data": [[far]]}).replace("h", "\\u0068"))):
            r = h.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and "a file given by URL (https://198.51.100.7" in r.json()["detail"], (path, r.text)
    assert limits.file_by_url(b'{"data": [{"path": "/tmp/gradio/x.png", "url": "http://127.0.0.1/x"}]}') == ""
    assert limits.file_by_url(b"not json") == "" and limits.file_by_url(b"[" * 100_000) == ""


def test_the_longest_edit_message_fits_the_canvas_cap_with_room_to_spare(access_app):
    """The cap is measured: a stroke of the most points the canvas sends, each coordinate at its widest (2
    decimals, canvas.js round2; up to 4 image sides off the picture on a 32767-pixel image, db.masks)."""
    demo, url, _ = access_app
    wide = -4 * 32767 - 0.99
    stroke = {"token": "x" * 32, "seq": 2 ** 53, "op": "stroke", "radius": 1023.99, "index": 19_999, "erase": False,
              "points": [[wide, wide]] * canvas.MAX_STROKE_POINTS, "min_score": 0.05}
    polygon = dict(stroke, op="polygon", mode="subtract", points=[[wide, wide]] * canvas.MAX_POLYGON_POINTS)
    region = {"token": "x" * 32, "seq": 2 ** 53, "op": "region", "x0": 32767, "y0": 32767, "w": 2048, "h": 2048,
              "index": 19_999, "category": 2 ** 53, "subtract": False, "min_score": 0.05,
              "counts": "\\" * canvas.MAX_REGION_COUNTS}  # (a backslash is two characters in JSON)
    for message in (stroke, polygon, region):
        envelope = {"session_hash": "x" * 40, "component_id": 10 ** 6, "fn_name": "canvas_edit", "data": message}
        assert 2 * len(json.dumps(envelope, separators=(",", ":"))) < limits.CANVAS_BODY
        assert len(json.dumps(envelope)) < limits.CANVAS_BODY  # also as Python spaces it
    r = _call(_http(url, "lena"), demo, "canvas_edit", stroke)
    assert r.status_code == 200 and "session is gone" in r.json()["message"]  # through the cap, to the page check
    ops = [{"op": "select", "index": 0}] * (MAX_API_OPS - 1) + [stroke]
    assert 4 * len(json.dumps({"data": [1, ops]})) < limits.API_BODY  # /label_image: the most messages, a longest stroke


def test_caps_hold_without_logins_too(running_app):
    _, url = running_app
    status, text, _ = _raw(url.rstrip("/"), "/gradio_api/component_server", {}, "application/json",
                           iter([b"{"]), declared=600_000_000)
    assert status == 413 and "an edit message of the canvas" in text


def test_the_login_delay_counts_the_socket_peer_unless_a_named_proxy_forwards(access_app, tmp_path, store_factory):
    demo, url, _ = access_app
    forged = {"X-Forwarded-For": "203.0.113.9"}
    assert httpx.post(url + "/login", data={"username": "lena", "password": "wrong"}, headers=forged).status_code == 400
    clients = {k[1] for k in demo.login_guard._failures if k[0] == "client"}
    assert "127.0.0.1" in clients and "203.0.113.9" not in clients

    store = store_factory(tmp_path / "proxied")
    before = os.environ.get("FORWARDED_ALLOW_IPS")
    port = free_port()
    proxied = launch(store, port=port, block=False, auth=["root:root-secret"], trusted_proxies=["127.0.0.1"])
    try:
        assert os.environ.get("FORWARDED_ALLOW_IPS") == before  # read by uvicorn when Gradio made its server
        r = httpx.post(f"http://127.0.0.1:{port}/login", data={"username": "root", "password": "wrong"},
                       headers=forged)
        assert r.status_code == 400
        assert {k[1] for k in proxied.login_guard._failures if k[0] == "client"} == {"203.0.113.9"}
    finally:
        proxied.close()
        store_factory.release(store)
    with pytest.raises(UserError, match="--trusted-proxy 'proxy.example': an IP address"):
        access.check_proxies(["10.0.0.0/8", "::1", "proxy.example"])


@pytest.mark.parametrize("host, share, login, flag, opens", [
    ("127.0.0.1", False, False, False, ""), ("localhost", False, False, False, ""), ("::1", False, False, False, ""),
    ("127.0.0.2", False, False, False, ""), ("0.0.0.0", False, True, False, ""), ("127.0.0.1", True, True, False, ""),
    ("0.0.0.0", False, False, False, None), ("::", False, False, False, None), ("192.168.1.5", False, False, False, None),
    ("labeling.example", False, False, False, None), ("127.0.0.1", True, False, False, None),
    ("0.0.0.0", False, False, True, "WARNING"), ("127.0.0.1", True, False, True, "WARNING")])
def test_a_server_reachable_by_others_needs_a_login_or_the_flag_that_says_so(host, share, login, flag, opens):
    if opens is None:
        with pytest.raises(UserError, match="without a login: everyone who reached it would be an admin"):
            access.door(host, share, login, flag)
    else:
        said = access.door(host, share, login, flag)
        assert said.startswith(opens) and (not said or access.OPEN_FLAG in said)


def test_app_py_refuses_an_open_door_with_exit_2_and_says_an_open_one_first(make_store, tmp_path):
    st = cli_args(make_store.settings(tmp_path / "st"))
    app = [sys.executable, str(ROOT / "app.py"), *st, "--weights", "none"]
    for where in (["--host", "0.0.0.0"], ["--share", "ui"]):
        r = subprocess.run(app + where, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.splitlines()[0].startswith("error: refusing to serve ") and "--open-to-everyone-as-admin" in r.stderr
    port = free_port()
    p = subprocess.Popen(app + ["--host", "0.0.0.0", "--port", str(port), "--open-to-everyone-as-admin"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = p.stdout.readline()
        assert first.startswith("WARNING: no login: everyone who reaches this server (--host 0.0.0.0) is an admin")
        running = p.stdout.readline()
        while running and "maskloop is running" not in running:
            running = p.stdout.readline()
        assert "everyone who reaches it is an admin" in running
    finally:
        p.terminate()
        p.wait(timeout=60)
