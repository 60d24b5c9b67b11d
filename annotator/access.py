"""The login under ``--auth`` or the store's accounts: passwords checked in constant time, failed attempts
answered slower and slower (per user name and per client address), every route that changes state closed until
the login, and every request, reads included, checked against the account as it is now (``Sessions``).

The client address is the socket's peer. A reverse proxy's ``X-Forwarded-For`` counts only when the peer is a
proxy the admin named (``app.py --trusted-proxy``, ``forwarded_from``): otherwise any local client could make each
guess come from a new address and never be slowed down.

Gradio's ``/login`` route awaits an ``async`` auth callable on its event loop, so the delay is an
``asyncio.sleep``: other users' requests go on while a failed attempt waits. Attempts on one user name, and
from one client, are answered one at a time, so parallel guesses wait in line instead of running side by
side. Gradio checks the login on its queue, call, upload and file routes but not on a few others that act
on a session (cancel, stream, reset, heartbeat); ``LoginRequired`` closes those and any route added later."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from typing import Awaitable, Callable, Container, Iterable, Mapping

from starlette.requests import cookie_parser

from db import users
from db.errors import UserError
from db.store import Store

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0  # seconds before a failed attempt is answered
DOUBLE_AFTER = 3  # failures answered after FIRST_DELAY; from then on the delay doubles
MAX_DELAY = 30.0
FORGET_AFTER = 15 * 60  # seconds without a failure after which a name's or client's failures are forgotten
MAX_TRACKED = 10_000  # names and clients remembered at most (the oldest are forgotten first)

COMMAND_LINE = "--auth"  # the stamp of an admin given on the command line: it stands while the server runs

_client: contextvars.ContextVar[str] = contextvars.ContextVar("maskloop_login_client", default="unknown")
# LoginRequired hands each /login request a dict; LoginGuard.check puts (name, stamp) in it when the password is right
_login_seen: contextvars.ContextVar[dict | None] = contextvars.ContextVar("maskloop_login_seen", default=None)


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
                 lookup: Callable[[str, str], str | None] | None = None):
        """``accounts``: (name, password) given on the command line; ``lookup(name, password)``: the store's
        accounts, the account's stamp when the password is right, else None (db.users.login_stamp, a KDF: run
        in a thread, so the event loop goes on). A successful check leaves (name, stamp) for the login
        session LoginRequired registers (``Sessions``)."""
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
                stamp = await asyncio.to_thread(self._lookup, username, password)
            else:  # compared even for an unknown name, so the answer takes as long either way
                ok = hmac.compare_digest(password.encode(), expected if expected is not None else b"\0" * 32)
                stamp = COMMAND_LINE if ok and expected is not None else None
            if stamp is not None:
                seen = _login_seen.get()
                if seen is not None:
                    seen["login"] = (username, stamp)
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


class Sessions:
    """The login sessions Gradio's /login handed out (the token its cookie carries), each with its login's name
    and the account's stamp when it logged in (db.users.stamp; COMMAND_LINE for an ``--auth`` admin).
    ``why_not`` compares that stamp with the account as it is now, so a removed account or a changed password
    ends the session at its next request, whatever the request. Thread-safe."""

    def __init__(self, stamp_of: Callable[[str], str | None]):
        """``stamp_of(name)``: the account's stamp as it is now, None when there is no such account (it may read
        the store: LoginRequired calls it off the event loop)."""
        self._stamp_of = stamp_of
        self._sessions: dict[str, tuple[str, str]] = {}  # token -> (name, stamp at the login)
        self._lock = threading.Lock()

    def started(self, token: str, name: str, stamp: str) -> None:
        with self._lock:
            self._sessions[token] = (name, stamp)

    def ended(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def keep_only(self, live: Container[str]) -> None:
        """Forget the sessions whose token Gradio no longer holds (logged out)."""
        with self._lock:
            for token in [t for t in self._sessions if t not in live]:
                del self._sessions[token]

    def name(self, token: str | None) -> str | None:
        with self._lock:
            got = self._sessions.get(token) if isinstance(token, str) else None
        return got[0] if got else None

    def why_not(self, token: str) -> str:
        """"" while the session stands; else why it does not (reads the account: call it off the event loop)."""
        with self._lock:
            got = self._sessions.get(token)
        if got is None:
            return "this login is not known to the server (it restarted?): log in again"
        name, stamp = got
        now = self._stamp_of(name)
        if now is None:
            return f"the account {name!r} was removed: this login ended"
        if not hmac.compare_digest(now, stamp):
            return f"the password of {name!r} was changed: log in again with the new one"
        return ""

    def token_in(self, cookies: Mapping | Iterable | None) -> str | None:
        """The token of a session of ours among a request's cookies (Gradio's ``access-token-*``), or None."""
        try:
            items = dict(cookies or {}).items()
        except (TypeError, ValueError):
            return None
        with self._lock:
            for name, value in items:
                if isinstance(name, str) and name.startswith("access-token") and value in self._sessions:
                    return value
        return None

    @staticmethod
    def key(token: str | None) -> str:
        """A name for the session that may be kept and shown (pages keep it), not the token itself."""
        return hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""


class Roles:
    """What each login may do on this server (db.users). Without a login everyone is the local admin; a name
    given with ``--auth`` is an admin; any other name has its role in the store's users table, read on every
    check, so a changed role or a removed account takes effect at once.

    A request names its login through Gradio (``request.username``, on events), or, for the canvas's server
    functions, which are handed the bare HTTP request, through its session cookie (``sessions``)."""

    def __init__(self, store: Store, admins: list[str] = (), login: bool = False, sessions: Sessions | None = None):
        self.store, self.admins, self.login, self.sessions = store, set(admins), login, sessions

    def login_of(self, request) -> str | None:
        """The login's name on ``request``, or None (no login, or none of this server)."""
        name = getattr(request, "username", None)
        if name is None and self.sessions is not None:
            name = self.sessions.name(self.sessions.token_in(_cookies(request)))
        return name

    def session_key(self, request) -> str:
        """Sessions.key of the login session ``request`` belongs to ("" without logins)."""
        if self.sessions is None:
            return ""
        return Sessions.key(self.sessions.token_in(_cookies(request)))

    def name(self, request) -> str:
        return self.login_of(request) or self.store.settings.user

    def role(self, request) -> str | None:
        return self.role_of(self.login_of(request))

    def role_of(self, name: str | None) -> str | None:
        if not self.login:
            return "admin"
        if name in self.admins:
            return "admin"
        return users.role_of(self.store, name)

    def stamp_of(self, name: str) -> str | None:
        """Sessions' ``stamp_of``: COMMAND_LINE for an ``--auth`` admin, else the account's stamp."""
        return COMMAND_LINE if name in self.admins else users.stamp(self.store, name)

    def may(self, request, action: str) -> bool:
        return users.may(self.role(request), action)

    def require(self, request, action: str) -> None:
        """UserError naming the role needed unless this login may do ``action``."""
        self.require_of(self.login_of(request) if self.login else None, action)

    def require_of(self, name: str | None, action: str) -> None:
        """UserError naming the role needed unless the login ``name`` may do ``action``."""
        users.require(self.role_of(name), action, (name or "") if self.login else "")


def _cookies(request) -> dict:
    try:
        return dict(getattr(request, "cookies", None) or {})
    except (TypeError, ValueError):
        return {}


UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")  # Gradio's routes that store files


class LoginRequired:
    """ASGI middleware, installed when the app has accounts. For every HTTP request it

    - notes the client address for the login's delays (the socket's peer, or what a trusted proxy forwarded);
    - checks the login session the request carries against the account as it is now (``Sessions.why_not``): a
      session whose account was removed or whose password changed is ended there (Gradio's token forgotten,
      ``on_revoke`` told), so the request goes on as one without a login, refused wherever a login is needed;
    - refuses (401) a request that changes state (any method but GET/HEAD/OPTIONS, and the session heartbeat)
      without a login, except the login itself;
    - refuses (403) an upload from a login whose role may not import: uploads are only ever imported;
    - registers the session a successful /login starts, and tells ``on_logout`` of a login that logs out.

    The login's name goes on in ``scope["maskloop.login"]`` (annotator.limits counts uploads per login)."""

    OPEN_METHODS = {"GET", "HEAD", "OPTIONS"}
    GUARDED_GETS = ("/gradio_api/heartbeat/",)  # a GET that ends a session's state when it disconnects

    def __init__(self, app, sessions: Sessions, roles: Roles, on_logout=None, on_revoke=None):
        self.app, self.sessions, self.roles = app, sessions, roles
        self.on_logout = on_logout  # called (in a thread) with the login's name as it logs out, before the answer
        self.on_revoke = on_revoke  # called (in a thread) with (name, Sessions.key, why) when a session ended

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = _client.set((scope.get("client") or ("unknown",))[0])
        path = scope["path"].rstrip("/")
        try:
            name, why = await self._standing(scope)
            scope["maskloop.login"] = name
            if self._needs_login(scope) and name is None:
                return await answer(send, 401, why or "Not authenticated")
            if name is not None and scope["method"] == "POST" and path.endswith(UPLOAD_PATHS):
                no = await asyncio.to_thread(self._may_not_upload, name)
                if no:
                    return await answer(send, 403, no)
            if path.endswith("/login"):
                return await self._login(scope, receive, send)
            if path.endswith("/logout") and name is not None and self.on_logout is not None:
                # its pages end before the answer (they free their claims: writes, off the event loop)
                await asyncio.to_thread(self.on_logout, name)
            await self.app(scope, receive, send)
        finally:
            _client.reset(token)
            if path.endswith("/logout"):  # Gradio forgot the login's tokens
                self.sessions.keep_only(getattr(scope.get("app"), "tokens", {}))

    async def _standing(self, scope) -> tuple[str | None, str]:
        """(the login the request carries, or None; why its session just ended, or "")."""
        tokens, token = _session_token(scope)
        if token is None:
            return None, ""
        why = await asyncio.to_thread(self.sessions.why_not, token)
        if not why:
            return tokens[token], ""
        name = tokens.pop(token, None)  # Gradio forgets it: every route of its own now sees no login
        self.sessions.ended(token)
        log.info("login session of %r ended: %s", name, why)
        if self.on_revoke is not None:
            await asyncio.to_thread(self.on_revoke, name, Sessions.key(token), why)
        return None, why

    def _may_not_upload(self, name: str) -> str:
        try:
            self.roles.require_of(name, "import")
        except UserError as e:
            return f"uploading files is for importing them: {e}"
        return ""

    async def _login(self, scope, receive, send):
        """Run Gradio's /login; when it hands out a token, register its session with the stamp the password
        was checked against (LoginGuard.check leaves it in ``_login_seen``)."""
        seen: dict = {}
        reset = _login_seen.set(seen)
        app = scope.get("app")

        async def noting(message):
            if message["type"] == "http.response.start" and message["status"] == 200 and "login" in seen:
                token = _set_cookie(message.get("headers", ()), f"access-token-{getattr(app, 'cookie_id', '')}")
                if token is not None:
                    self.sessions.keep_only(getattr(app, "tokens", {}))
                    self.sessions.started(token, *seen["login"])
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            _login_seen.reset(reset)

    def _needs_login(self, scope) -> bool:
        path = scope["path"].rstrip("/")
        if path.endswith("/login"):
            return False
        return scope["method"] not in self.OPEN_METHODS or scope["path"].startswith(self.GUARDED_GETS)


def _session_token(scope) -> tuple[dict, str | None]:
    """(Gradio's tokens, the one of them the request's cookies carry, or None)."""
    app = scope.get("app")  # Gradio's App, which holds the tokens it handed out
    tokens = getattr(app, "tokens", None)
    if not tokens:
        return {}, None
    cookies = {}
    for name, value in scope["headers"]:
        if name == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    for n in (f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}"):
        if cookies.get(n) in tokens:
            return tokens, cookies[n]
    return tokens, None


def _set_cookie(headers, name: str) -> str | None:
    """The value a response's Set-Cookie headers give the cookie ``name``, or None."""
    for key, value in headers:
        if key.lower() == b"set-cookie":
            got = cookie_parser(value.decode("latin-1").split(";", 1)[0])
            if name in got:
                return got[name]
    return None


async def answer(send, status: int, message: str) -> None:
    """A JSON answer ``{"detail": message}`` with ``status`` (what Gradio's own refusals look like)."""
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# --- who may reach the server --------------------------------------------------------------------------------
def check_proxies(addresses: Iterable[str]) -> list[str]:
    """The ``--trusted-proxy`` values as given (an IP address or a network such as 10.0.0.0/8); UserError
    naming one that is neither."""
    out = []
    for a in addresses:
        try:
            ipaddress.ip_network(a, strict=False)
        except ValueError:
            raise UserError(f"--trusted-proxy {a!r}: an IP address (10.0.0.5) or a network (10.0.0.0/8)") from None
        out.append(a)
    return out


@contextlib.contextmanager
def forwarded_from(proxies: Iterable[str]):
    """While Gradio makes its server: uvicorn takes the client address from ``X-Forwarded-For`` only for a peer
    among ``proxies`` (none: the socket's peer always). Uvicorn reads this from FORWARDED_ALLOW_IPS when its
    server is made and trusts 127.0.0.1 by default, which let any local client choose its own address."""
    before = os.environ.get("FORWARDED_ALLOW_IPS")
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(check_proxies(proxies))  # "" trusts nobody
    try:
        yield
    finally:
        if before is None:
            del os.environ["FORWARDED_ALLOW_IPS"]
        else:
            os.environ["FORWARDED_ALLOW_IPS"] = before


OPEN_FLAG = "--open-to-everyone-as-admin"


def loopback(host: str) -> bool:
    """Whether ``host`` (``--host``) serves only this machine: localhost or a loopback address."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything


def door(host: str, share: bool, login: bool, open_to_everyone: bool = False) -> str:
    """Whether the server may start: "" when only this machine reaches it or a login is required; the line to
    say first when it serves others without a login because the person said so (``open_to_everyone``);
    UserError naming the way out otherwise. Without a login every visitor is an admin (import, export,
    fine-tune, delete categories)."""
    where = "a public --share link" if share else f"--host {host}"
    if login or (loopback(host) and not share):
        return ""
    if open_to_everyone:
        return (f"WARNING: no login: everyone who reaches this server ({where}) is an admin here and may import, "
                f"export, fine-tune and delete ({OPEN_FLAG})")
    raise UserError(f"refusing to serve {where} without a login: everyone who reached it would be an admin (import, "
                    f"export, fine-tune, delete). Add an account (app.py user add NAME --role admin), or give --auth "
                    f"USER:PASSWORD, or pass {OPEN_FLAG} to serve it open anyway")
