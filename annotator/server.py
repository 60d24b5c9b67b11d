"""Launching the app: logins (auth), upload limits, and the HTTP server with its guards (annotator.access,
annotator.limits)."""

from __future__ import annotations

import contextlib

import gradio as gr
from starlette.middleware import Middleware

from annotator import access, store_view
from annotator.access import LoginGuard, LoginRequired, Roles, Sessions
from annotator.label_tab import HOTKEYS_JS
from annotator.limits import BodyLimits, UploadLedger, UploadLimits
from annotator.ui import build_app
from db import users
from db.errors import UserError
from db.store import Store
from model.api import ModelOptions

DEFAULT_MAX_UPLOAD_MB = 2048  # uploads (images, zips, COCO files) larger than 2 GiB are refused
DEFAULT_USER_UPLOAD_MB = 8192  # what one login may upload while Gradio keeps it (annotator.limits.UploadLimits)
DEFAULT_USER_UPLOAD_FILES = 10_000


def parse_auth(pairs: list[str]) -> list[tuple[str, str]] | None:
    out = []
    for p in pairs:
        user, sep, pw = p.partition(":")
        if not sep or not user or not pw:
            raise UserError(f"--auth {p!r}: expected USER:PASSWORD")
        out.append((user, pw))
    return out or None


def has_login(store: Store, auth: list[str] | None) -> bool:
    """Whether the UI asks for a login: admins given with ``--auth``, or any account in the store."""
    return bool(parse_auth(auth or [])) or users.count(store) > 0


def upload_limits(max_upload_mb: float | None = None, user_upload_mb: float | None = None,
                  user_upload_files: int | None = None) -> tuple[int, UploadLimits]:
    """(the largest file in bytes, each login's upload budget) from the command line's MiB and counts
    (None: the defaults; a login may always upload at least one file of the largest size); UserError naming
    a value that is not positive."""
    mb = DEFAULT_MAX_UPLOAD_MB if max_upload_mb is None else max_upload_mb
    per_user = max(DEFAULT_USER_UPLOAD_MB, mb) if user_upload_mb is None else user_upload_mb
    files = DEFAULT_USER_UPLOAD_FILES if user_upload_files is None else user_upload_files
    for option, value in (("--max-upload-mb", mb), ("--user-upload-mb", per_user), ("--user-upload-files", files)):
        if not value > 0:
            raise UserError(f"{option} must be a positive number, not {value}")
    return int(mb * 2 ** 20), UploadLimits(bytes_per_login=int(per_user * 2 ** 20), files_per_login=int(files))


def launch(store: Store, host: str = "127.0.0.1", port: int = 7860, auth: list[str] | None = None,
           share: bool = False, block: bool = True, max_upload_mb: float | None = None,
           options: ModelOptions | None = None, trusted_proxies: list[str] = (), open_to_everyone: bool = False,
           user_upload_mb: float | None = None, user_upload_files: int | None = None) -> gr.Blocks:
    """Serve the app. With ``auth`` (USER:PASSWORD strings: admins) or any account in the store's users table
    (app.py user add), a login is required for everything that changes state, every request is checked against
    the account as it is now (a removed account or a changed password ends the login at its next request),
    each login may do what its role allows, only roles that may import upload, and failed logins are answered
    slower and slower, per client: the socket's peer, or the address a proxy in ``trusted_proxies`` forwards
    (annotator.access). Without a login the server refuses to listen beyond this machine unless
    ``open_to_everyone`` (access.door). Uploads larger than ``max_upload_mb`` MiB (default
    DEFAULT_MAX_UPLOAD_MB) are refused, and so are a login's uploads past ``user_upload_mb`` MiB or
    ``user_upload_files`` files within the time Gradio keeps them; every request body has a cap
    (annotator.limits)."""
    max_file, budget = upload_limits(max_upload_mb, user_upload_mb, user_upload_files)
    accounts = parse_auth(auth or []) or []
    login = has_login(store, auth)
    access.door(host, share, login, open_to_everyone)
    proxies = access.check_proxies(trusted_proxies)
    roles = Roles(store, admins=[name for name, _ in accounts], login=login)
    sessions = roles.sessions = Sessions(roles.stamp_of) if login else None
    guard = LoginGuard(accounts, lookup=lambda name, pw: users.login_stamp(store, name, pw)) if login else None
    exports = store_view.ExportFolder()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        exports.close()  # the server is shutting down: the last export goes too
        if demo.follower is not None:
            demo.follower.stop()

    demo = build_app(store, exports=exports, options=options, roles=roles)
    label_tab = demo.label_tab
    middleware = [Middleware(
        LoginRequired, sessions=sessions, roles=roles,
        on_logout=lambda name: label_tab.end_login(name, "you logged out: log in and reload the page"),
        on_revoke=lambda name, key, why: label_tab.end_session(key, f"{why}, and reload the page"))] if guard else []
    middleware.append(Middleware(BodyLimits, ledger=UploadLedger(budget)))
    demo.queue(default_concurrency_limit=4)
    with access.forwarded_from(proxies):  # uvicorn reads which peers may forward a client address now
        demo.launch(server_name=host, server_port=port, auth=guard.check if guard else None, share=share,
                    prevent_thread_lock=True, show_error=True, head=HOTKEYS_JS, quiet=True, max_file_size=max_file,
                    app_kwargs={"lifespan": lifespan, "middleware": middleware})
    demo.login_guard = guard  # (its failed attempts by user name and by client)
    if block:  # our own line: Gradio's hint names its launch(share=True), the app's option is --share
        public = f"; public link {demo.share_url}" if share and demo.share_url else " (--share for a public link)"
        door = " (no login: everyone who reaches it is an admin)" if open_to_everyone and not login else ""
        print(f"maskloop is running at {demo.local_url}{public}{door}; Ctrl+C stops it", flush=True)
        demo.block_thread()
    return demo
