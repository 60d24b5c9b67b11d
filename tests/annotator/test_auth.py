"""--auth: failed logins are answered slower and slower without holding up anyone else, every route that
changes state refuses a request without the login, and uploads over the size cap are refused."""

import asyncio
import inspect
import re

import httpx
import pytest
from gradio_client import Client, handle_file

from annotator import access
from db.coco_import import import_coco
from tests.annotator.conftest import free_port


def _guard(sleep):
    return access.LoginGuard([("alice", "secret")], sleep=sleep)


def test_thirty_bad_logins_are_answered_slower_and_slower():
    waits = []

    async def sleep(s):
        waits.append(s)

    async def scenario():
        guard = _guard(sleep)
        assert inspect.iscoroutinefunction(guard.check)  # Gradio awaits it instead of running it on its loop
        results = [await guard.check("alice", f"guess{k}") for k in range(30)]
        return results, await guard.check("alice", "secret"), await guard.check("mallory", "secret")

    bad, good, unknown = asyncio.run(scenario())
    assert not any(bad) and good and not unknown
    assert waits[:30] == [access.delay_after(n) for n in range(1, 31)]
    assert waits[0] >= 1 and waits[29] == access.MAX_DELAY and waits[:30] == sorted(waits[:30])
    assert access.delay_after(4) > access.delay_after(3)


def test_a_waiting_attempt_holds_up_only_its_own_name_and_client():
    gate = asyncio.Event()
    waits = []

    async def sleep(s):
        waits.append(s)
        await gate.wait()

    async def as_client(client, guard, user, password):
        access._client.set(client)
        return await guard.check(user, password)

    async def scenario():
        guard = access.LoginGuard([("alice", "secret"), ("bob", "pw")], sleep=sleep)
        first = asyncio.create_task(as_client("10.0.0.1", guard, "alice", "wrong"))
        while not waits:  # the failed attempt is now waiting before it answers
            await asyncio.sleep(0)
        same_name = asyncio.create_task(as_client("10.0.0.2", guard, "alice", "secret"))
        other = await as_client("10.0.0.3", guard, "bob", "pw")  # goes through while alice's attempt waits
        await asyncio.sleep(0)
        pending = not first.done() and not same_name.done()  # the same name waits in line
        gate.set()
        return other, pending, await first, await same_name

    other, pending, first, same_name = asyncio.run(scenario())
    assert other and pending and first is False and same_name is True
    assert waits == [access.delay_after(1)]


@pytest.fixture(scope="module")
def auth_app(tmp_path_factory, synth_dir, store_factory):
    from annotator.server import launch

    store = store_factory(tmp_path_factory.mktemp("auth"))
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    port = free_port()
    demo = launch(store, port=port, block=False, auth=["alice:secret"], max_upload_mb=0.05)  # 51,200 bytes
    yield demo, f"http://127.0.0.1:{port}", store
    demo.close()
    store_factory.release(store)


def _fn_index(demo, api_name):
    return next(i for i, d in enumerate(demo.config["dependencies"]) if d.get("api_name") == api_name)


def _routes(routes):
    """Every route of the app, including those of included routers (Gradio's /gradio_api router)."""
    for route in routes:
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        yield from (_routes(inner.routes) if inner is not None else [route])


def test_every_state_changing_route_refuses_without_login(auth_app):
    demo, url, store = auth_app
    media = next(store.settings.store_dir.rglob("*.png"))
    named = [
        ("POST", "/gradio_api/queue/join", {"data": [False, False], "fn_index": _fn_index(demo, "export"),
                                            "session_hash": "s1", "trigger_id": None, "event_data": None}),
        ("POST", "/gradio_api/call/export", {"data": [False, False, False]}),
        ("POST", "/gradio_api/call/import_images", {"data": [[]]}),
        ("POST", "/gradio_api/call/refresh_store", {"data": []}),
        ("POST", "/gradio_api/run/export", {"data": [False, False, False]}),
        ("POST", "/gradio_api/upload", None),
        ("GET", f"/gradio_api/file={media}", None),
        ("POST", "/gradio_api/cancel", {"session_hash": "s1", "fn_index": 0, "event_id": "e"}),
        ("POST", "/gradio_api/stream/e", {"data": [], "fn_index": 0, "session_hash": "s1"}),
        ("GET", "/gradio_api/heartbeat/s1", None),
    ]
    # and every other route that takes more than GET/HEAD, as Gradio defines them in this version
    for route in _routes(demo.app.routes):
        methods = set(getattr(route, "methods", None) or ()) - {"GET", "HEAD", "OPTIONS"}
        if methods and not route.path.rstrip("/").endswith("/login"):
            named += [(m, re.sub(r"\{[^}]+\}", "x", route.path), {}) for m in methods]
    assert len(named) > 15
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body in named:
            if path.endswith("/upload"):
                r = client.post(path, files={"files": ("a.png", media.read_bytes())})
            else:
                r = client.request(method, path, json=body)
            assert r.status_code in (401, 403), (method, path, r.status_code, r.text[:200])


def test_after_login_the_routes_work_and_large_uploads_are_refused(auth_app, synth_dir, tmp_path):
    demo, url, store = auth_app
    client = Client(url + "/", auth=("alice", "secret"), verbose=False, download_files=False)
    by_status, *_ = client.predict(api_name="/refresh_store")
    assert {row[0]: row[1] for row in by_status["data"]}["done"] == 12
    small = synth_dir / "synth_000001.png"
    assert small.stat().st_size < 0.05 * 2**20
    report = client.predict([handle_file(str(small))], api_name="/import_images")
    assert "already" in report or "imported" in report
    assert client.predict(False, False, False, api_name="/export")

    big = tmp_path / "big.png"
    big.write_bytes(small.read_bytes() + b"\0" * 60_000)
    with httpx.Client(base_url=url, timeout=30) as h:
        assert h.post("/login", data={"username": "alice", "password": "secret"}).status_code == 200
        ok = h.post("/gradio_api/upload", files={"files": ("small.png", small.read_bytes())})
        assert ok.status_code == 200
        refused = h.post("/gradio_api/upload", files={"files": ("big.png", big.read_bytes())})
        assert refused.status_code == 413 and "maximum allowed size" in refused.text
    with pytest.raises(Exception, match="exceeds the maximum file size"):  # checked by the client too
        client.predict([handle_file(str(big))], api_name="/import_images")


def test_a_wrong_password_is_refused_then_the_right_one_works(auth_app):
    _, url, _ = auth_app
    with httpx.Client(base_url=url, timeout=60) as h:
        assert h.post("/login", data={"username": "alice", "password": "nope"}).status_code == 400
        assert h.get("/gradio_api/login_check").status_code == 401
        assert h.post("/login", data={"username": "alice", "password": "secret"}).status_code == 200
        assert h.get("/gradio_api/login_check").status_code == 200


def test_the_canvas_presence_call_needs_the_login_and_works_with_it(auth_app):
    """The canvas polls who else has its image open through a server function (annotator.presence): closed
    without the login like every other call, answered with it (a page it does not know has nobody with it)."""
    demo, url, _ = auth_app
    board = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "label-canvas")
    body = {"session_hash": "presence", "component_id": board._id, "fn_name": "canvas_presence",
            "data": {"token": "no-such-page", "browser": "b"}}
    with httpx.Client(base_url=url, timeout=30) as h:
        assert h.post("/gradio_api/component_server", json=body).status_code in (401, 403)
        assert h.post("/login", data={"username": "alice", "password": "secret"}).status_code == 200
        r = h.post("/gradio_api/component_server", json=body)
        assert r.status_code == 200 and r.json() == {"image_id": None, "others": []}
