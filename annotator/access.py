"""The login under ``--auth``: passwords checked in constant time, failed attempts answered slower and slower
(per user name and per client address), and every route that changes state closed until the login.

Gradio's ``/login`` route awaits an ``async`` auth callable on its event loop, so the delay is an
``asyncio.sleep``: other users' requests go on while a failed attempt waits. Attempts on one user name, and
from one client, are answered one at a time, so parallel guesses wait in line instead of running side by
side. Gradio checks the login on its queue, call, upload and file routes but not on a few others that act
on a session (cancel, stream, reset, heartbeat); ``LoginRequired`` closes those and any route added later."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import time
from typing import Awaitable, Callable

from starlette.requests import cookie_parser

from db import users
from db.store import Store

FIRST_DELAY = 1.0  # seconds before a failed attempt is answered
DOUBLE_AFTER = 3  # failures answered after FIRST_DELAY; from then on the delay doubles
MAX_DELAY = 30.0
FORGET_AFTER = 15 * 60  # seconds without a failure after which a name's or client's failures are forgotten
MAX_TRACKED = 10_000  # names and clients remembered at most (the oldest are forgotten first)

_client: contextvars.ContextVar[str] = contextvars.ContextVar("maskloop_login_client", default="unknown")


def delay_after(failures: int) -> float:
    """Seconds before the answer to the ``failures``-th failed attempt in a row: 1, 1, 1, 2, 4, ... 30."""
    if failures <= 0:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, failures - DOUBLE_AFTER))


class LoginGuard:
    """``check`` is the auth callable for Gradio's ``launch(auth=...)``."""

    def __init__(self, accounts: list[tuple[str, str]],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 lookup: Callable[[str, str], bool] | None = None):
        """``accounts``: (name, password) given on the command line; ``lookup(name, password)``: the store's
        accounts (db.users.login, a KDF: run in a thread, so the event loop goes on)."""
        self.accounts = {user: pw.encode() for user, pw in accounts}
        self._lookup = lookup
        self._sleep, self._clock = sleep, clock
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (count, time of the last)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def check(self, username: str, password: str) -> bool:
        keys = [("client", _client.get()), ("user", username)]  # always locked in this order
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                await stack.enter_async_context(self._locks.setdefault(key, asyncio.Lock()))
            expected = self.accounts.get(username)
            if expected is None and self._lookup is not None:
                ok = await asyncio.to_thread(self._lookup, username, password)
            else:  # compared even for an unknown name, so the answer takes as long either way
                ok = hmac.compare_digest(password.encode(), expected if expected is not None else b"\0" * 32)
                ok = ok and expected is not None
            if ok:
                for key in keys:
                    self._failures.pop(key, None)
                self._forget_locks(keys)
                return True
            counts = [self._failed(key) for key in keys]
            await self._sleep(delay_after(max(counts)))
        self._forget_locks(keys)
        return False

    def _failed(self, key: tuple[str, str]) -> int:
        now = self._clock()
        count, last = self._failures.pop(key, (0, now))
        count = 1 if now - last > FORGET_AFTER else count + 1
        self._failures[key] = (count, now)  # re-inserted: the dict stays ordered oldest first
        while len(self._failures) > MAX_TRACKED:
            del self._failures[next(iter(self._failures))]
        return count

    def _forget_locks(self, keys) -> None:
        for key in keys:
            lock = self._locks.get(key)
            if lock is not None and not lock.locked() and key not in self._failures:
                del self._locks[key]


class Roles:
    """What each login may do on this server (db.users). Without a login everyone is the local admin; a name
    given with ``--auth`` is an admin; any other name has its role in the store's users table, read on every
    check, so a changed role or a removed account takes effect at once."""

    def __init__(self, store: Store, admins: list[str] = (), login: bool = False):
        self.store, self.admins, self.login = store, set(admins), login

    def name(self, request) -> str:
        return getattr(request, "username", None) or self.store.settings.user

    def role(self, request) -> str | None:
        return self.role_of(getattr(request, "username", None))

    def role_of(self, name: str | None) -> str | None:
        if not self.login:
            return "admin"
        if name in self.admins:
            return "admin"
        return users.role_of(self.store, name)

    def may(self, request, action: str) -> bool:
        return users.may(self.role(request), action)

    def require(self, request, action: str) -> None:
        """UserError naming the role needed unless this login may do ``action``."""
        users.require(self.role(request), action, self.name(request) if self.login else "")


class LoginRequired:
    """ASGI middleware: notes the client address for the login's delays, and refuses (401) a request that
    changes state (any method but GET/HEAD/OPTIONS, and the session heartbeat) without a login, except the
    login itself. Installed only when the app has accounts."""

    OPEN_METHODS = {"GET", "HEAD", "OPTIONS"}
    GUARDED_GETS = ("/gradio_api/heartbeat/",)  # a GET that ends a session's state when it disconnects

    def __init__(self, app, on_logout=None):
        self.app = app
        self.on_logout = on_logout  # called with the login's name after it logged out (its pages end)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = _client.set((scope.get("client") or ("unknown",))[0])
        leaving = _login_name(scope) if scope["path"].rstrip("/").endswith("/logout") else None
        try:
            if self._needs_login(scope) and not _logged_in(scope):
                return await _refuse(send)
            await self.app(scope, receive, send)
        finally:
            _client.reset(token)
            if leaving and self.on_logout is not None:
                self.on_logout(leaving)

    def _needs_login(self, scope) -> bool:
        path = scope["path"].rstrip("/")
        if path.endswith("/login"):
            return False
        return scope["method"] not in self.OPEN_METHODS or scope["path"].startswith(self.GUARDED_GETS)


def _login_name(scope) -> str | None:
    """The login whose token of Gradio's (the cookies its /login route sets) the request carries, or None."""
    app = scope.get("app")  # Gradio's App, which holds the tokens it handed out
    tokens = getattr(app, "tokens", None)
    if not tokens:
        return None
    cookies = {}
    for name, value in scope["headers"]:
        if name == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    for n in (f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}"):
        if cookies.get(n) in tokens:
            return tokens[cookies[n]]
    return None


def _logged_in(scope) -> bool:
    """Whether the request carries a token of Gradio's login."""
    return _login_name(scope) is not None


async def _refuse(send) -> None:
    body = b'{"detail": "Not authenticated"}'
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
