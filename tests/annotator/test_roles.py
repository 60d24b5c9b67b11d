"""Roles under a login (db.users, annotator.access.Roles): a labeler labels; a reviewer also approves or sends
back others' labels; an admin also imports, trains, activates, edits categories and exports. The server
refuses what a role may not do whatever the page shows, and who did what is recorded per image."""

import subprocess
import sys
from types import SimpleNamespace
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from annotator.access import Roles
from annotator.labeling import LabelSession
from annotator.label_tab import LabelTab
from db import annotations, users
from db.coco_import import import_coco
from db.errors import UserError
from tests.annotator.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"lena": "lena-labels", "rita": "rita-reviews", "adam": "adam-admins"}


class _Req:
    def __init__(self, username):
        self.username = username


@pytest.fixture(scope="module")
def cheap_kdf():
    mp = pytest.MonkeyPatch()
    mp.setattr(users, "SCRYPT_N", 2 ** 10)  # verify reads the cost from each stored hash
    yield
    mp.undo()


def _team(store):
    for (name, pw), role in zip(PASSWORDS.items(), ("labeler", "reviewer", "admin")):
        users.add(store, name, role, pw)


def test_roles_without_login_with_auth_admins_and_from_the_users_table(store, cheap_kdf):
    _team(store)
    assert Roles(store).role(_Req(None)) == "admin"  # no login: the local admin, as before accounts
    roles = Roles(store, admins=["root"], login=True)
    assert [roles.role(_Req(n)) for n in ("root", "lena", "rita", "adam", "ghost", None)] == [
        "admin", "labeler", "reviewer", "admin", None, None]
    users.set_role(store, "lena", "reviewer")  # read on every check: in effect at once
    users.remove(store, "rita")
    assert roles.role(_Req("lena")) == "reviewer" and roles.role(_Req("rita")) is None
    with pytest.raises(UserError, match="rita has no account"):
        roles.require(_Req("rita"), "label")


def test_the_label_tab_refuses_a_removed_account_and_checks_the_role_of_each_verdict(store, synth_dir, cheap_kdf):
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    _team(store)
    roles = Roles(store, login=True)
    tab = LabelTab(store, SimpleNamespace(last_error="", want=lambda ids: None, warm=lambda ids: None), roles)
    ls, data = tab.open(1, None, _Req("ghost"))
    assert ls is None and "no account" in data["message"]
    ls, data = tab.open(1, None, _Req("lena"))
    assert (ls.user, ls.role) == ("lena", "labeler")
    for op in ({"op": "reject_rest"}, {"op": "save"}):
        tab.canvas_edit(dict(op, token=ls.token), _Req("lena"))  # (the canvas's calls carry the login)
    answer = tab.canvas_edit({"op": "approve", "token": ls.token}, _Req("lena"))
    assert "needs the reviewer role; lena is a labeler" in answer["message"]
    assert [h["user"] for h in answer["history"]] == ["lena"]
    rita, _ = tab.open(1, None, _Req("rita"))
    answer = tab.canvas_edit({"op": "send_back", "note": "<b>the dog</b> is missing", "token": rita.token}, _Req("rita"))
    assert "sent back" in answer["message"] and answer["status"] == "in_review"
    assert answer["history"][-1]["user"] == "rita" and answer["history"][-1]["current"]
    assert answer["history"][-1]["what"] == "sent back: <b>the dog</b> is missing"  # text; canvas.js sets textContent
    bad = tab.canvas_edit({"op": "send_back", "note": ["not", "text"], "token": rita.token}, _Req("rita"))
    assert "is not text" in bad["message"]
    users.set_role(store, "rita", "labeler")  # an open page follows a changed role, and a removed account
    assert "needs the reviewer role" in tab.canvas_edit({"op": "approve", "token": rita.token}, _Req("rita"))["message"]
    assert "session is gone" in tab.canvas_edit({"op": "save", "token": rita.token}, _Req("lena"))["message"]
    users.remove(store, "rita")
    gone = tab.canvas_edit({"op": "save", "token": rita.token}, _Req("rita"))
    assert "rita has no account" in gone["message"]


@pytest.fixture(scope="module")
def team_app(tmp_path_factory, synth_dir, cheap_kdf, store_factory):
    """The app with three accounts in its store (a login is then required) plus an --auth admin."""
    from annotator.server import launch

    store = store_factory(tmp_path_factory.mktemp("team"))
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    _team(store)
    port = free_port()
    demo = launch(store, port=port, block=False, auth=["root:root-secret"])
    yield store, f"http://127.0.0.1:{port}/"
    demo.close()
    store_factory.release(store)


def _client(url, name):
    return Client(url, auth=(name, PASSWORDS.get(name, "root-secret")), verbose=False, download_files=False)


def test_the_server_refuses_what_a_role_may_not_do_and_records_who_did_what(team_app, synth_dir):
    store, url = team_app
    lena, rita, adam, root = (_client(url, n) for n in ("lena", "rita", "adam", "root"))
    got = lena.predict(1, [{"op": "reject_rest"}, {"op": "save"}], api_name="/label_image")
    assert got["status"] == "done"
    with pytest.raises(Exception, match="needs the reviewer role; lena is a labeler"):
        lena.predict(1, [{"op": "approve"}], api_name="/label_image")
    with pytest.raises(Exception, match="needs the admin role"):
        lena.predict(False, False, False, api_name="/export")
    image = synth_dir / "synth_000001.png"
    with pytest.raises(Exception, match="403 Forbidden"):  # a labeler's file is refused at the upload itself
        lena.predict([handle_file(str(image))], api_name="/import_images")
    assert "needs the admin role" in lena.predict([], api_name="/import_images")  # and the import too
    assert "needs the admin role" in rita.predict("", "hacked", "", "", "", api_name="/save_cat_checked")
    assert "needs the admin role" in rita.predict("1", "", False, api_name="/delete_cat_checked")
    assert "needs the admin role" in lena.predict(1, 1, None, api_name="/start_job")
    assert "needs the admin role" in lena.predict(api_name="/cancel_job")
    assert "needs the admin role" in rita.predict("1", api_name="/activate")
    assert [c.name for c in LabelSession(store, 1).categories.values()].count("hacked") == 0

    adam.predict(2, [{"op": "reject_rest"}, {"op": "save"}], api_name="/label_image")
    with pytest.raises(Exception, match="saved these labels last"):  # not even an admin judges their own save
        adam.predict(2, [{"op": "approve"}], api_name="/label_image")
    assert rita.predict(1, [{"op": "approve"}], api_name="/label_image")["messages"] == ["image 1 approved"]
    assert adam.predict(False, False, False, api_name="/export")  # an admin exports
    assert "added category" in root.predict("", "kite", "", "", "", api_name="/save_cat_checked")
    lines = annotations.history(store, 1)
    assert [(e.user, e.what.split(":")[0]) for e in lines] == [("lena", "saved"), ("rita", "approved")]
    assert annotations.queue(store, annotations.TO_REVIEW) == [2]


def test_every_event_that_opens_an_image_knows_the_login(team_app):
    """Gradio hands the login only to a function whose parameter is annotated gr.Request: showing the Label
    tab (before anything is open) was not, so it opened as nobody and was refused for a labeler."""
    _, url = team_app
    lena = _client(url, "lena")
    for api in ("/on_show", "/first"):
        board = lena.predict(api_name=api)  # (the session State is not an API output)
        assert board.get("image_id") is not None and "no account" not in board.get("message", ""), (api, board)


def test_app_py_user_manages_accounts_with_the_password_on_stdin(tmp_path, make_store):
    from sqlalchemy import select

    from db.schema import User
    from tests.stores import cli_args

    settings = make_store.settings(tmp_path / "s")

    def run(*args, stdin=""):
        return subprocess.run([sys.executable, str(ROOT / "app.py"), *cli_args(settings), "user", *args],
                              input=stdin, capture_output=True, text=True, timeout=120)

    added = run("add", "lena", "--role", "labeler", stdin="a long password\n")
    assert added.returncode == 0 and "added lena (labeler)" in added.stdout and "asks for a login" in added.stderr
    store = make_store.open(settings)
    with store.session() as s:
        stored = s.scalar(select(User.password_hash).where(User.name == "lena"))
    assert stored.startswith("scrypt$") and "long password" not in stored
    assert users.login(store, "lena", "a long password") and not users.login(store, "lena", "a long passwor")
    again = run("add", "lena", "--role", "admin", stdin="another password\n")
    assert again.returncode == 2 and "exists already" in again.stderr and "Traceback" not in again.stderr
    short = run("add", "rita", "--role", "reviewer", stdin="short\n")
    assert short.returncode == 2 and "8 to 1024 characters" in short.stderr
    bad_role = run("add", "rita", "--role", "boss", stdin="long enough\n")
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr
    assert run("role", "lena", "reviewer").returncode == 0
    assert run("password", "lena", stdin="a new long password\n").returncode == 0
    listed = run("list").stdout
    assert listed.startswith("lena\treviewer\tsince ")
    assert run("remove", "lena").returncode == 0 and run("list").stdout == ""
    gone = run("remove", "lena")
    assert gone.returncode == 2 and "no user 'lena'" in gone.stderr


def test_the_login_checks_store_accounts_off_the_event_loop_and_delays_failures(store, cheap_kdf):
    import asyncio
    import threading

    from annotator.access import LoginGuard, delay_after

    _team(store)
    loop_thread, seen, waits = [], [], []

    def lookup(name, password):
        seen.append(threading.current_thread() is not loop_thread[0])
        return users.login_stamp(store, name, password)

    async def sleep(s):
        waits.append(s)

    async def scenario():
        loop_thread.append(threading.current_thread())
        guard = LoginGuard([("root", "root-secret")], sleep=sleep, lookup=lookup)
        return [await guard.check(n, p) for n, p in (("lena", "lena-labels"), ("lena", "wrong one"),
                                                     ("ghost", "lena-labels"), ("root", "root-secret"))]

    assert asyncio.run(scenario()) == [True, False, False, True]
    assert seen == [True, True, True]  # the KDF ran in a worker thread; root is a command-line account
    assert waits == [delay_after(1), delay_after(1)]
