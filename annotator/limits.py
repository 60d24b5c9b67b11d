"""How much a request may send: every request body has a cap for its route, checked before the body is read
(its Content-Length) and while it is read (the bytes of a chunked body, counted as they arrive), so a 600 MB
body is refused after at most the cap was held in memory; and uploads, which Gradio keeps on disk, have a
budget per login.

| route | cap |
|---|---|
| the canvas's server functions (``/gradio_api/component_server``) | ``CANVAS_BODY``: twice the longest edit message (a stroke of the most points, every coordinate at its widest) |
| the login form | ``LOGIN_BODY`` |
| uploads (``/gradio_api/upload``) | what is left of the login's upload budget (``UploadLimits``); Gradio caps each file (``--max-upload-mb``) |
| every other route (events, ``/label_image`` and the other APIs) | ``API_BODY`` |

An event's body (``/gradio_api/queue/join``, ``/call/...``, ``/run/...``) is read whole (under its cap) before the
app sees it, and refused (400) when it gives a file by URL (a ``"path"`` of http:// or https://): Gradio
would fetch such a file into its cache before the event's function could check the role, past the upload
route and its budget. The page never sends one: its files are uploaded first.

A refused body is answered 413 with a message naming the cap (429 for an upload when the login's count of
files is spent before it starts); the app's own answer to the part it read is dropped. The exception that stops the reading is a
``MultiPartException`` so that Gradio's upload parser deletes the files it had begun to write.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import time
from typing import Callable

from starlette.formparsers import MultiPartException

from annotator.access import UPLOAD_PATHS, answer

# Gradio keeps a copy of every upload and download (an export with images is a full copy of the dataset):
# every 30 minutes, delete those older than an hour; all of them when the app closes.
CACHE_CLEANUP = (1800, 3600)

CANVAS_BODY = 2 ** 20  # the longest edit message is about 480 KB (tests/annotator/test_access.py measures it)
LOGIN_BODY = 64 * 2 ** 10  # a name of 100 characters and a password of 1024
API_BODY = 16 * 2 ** 20  # a /label_image call of about 30 of the longest strokes; longer work goes in several calls
MiB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class UploadLimits:
    """What one login may upload while Gradio may still keep it (``window``: an upload is deleted at the first
    clean-up after it is an hour old, so at most 90 minutes): bytes and files."""

    bytes_per_login: int = 8 * 2 ** 30
    files_per_login: int = 10_000
    window: float = float(sum(CACHE_CLEANUP))


class UploadLedger:
    """Each login's uploads within the window, and the bytes and files of those still arriving (counted as they
    arrive, so parallel uploads share one budget). Used on the server's event loop only."""

    def __init__(self, limits: UploadLimits = UploadLimits(), clock: Callable[[], float] = time.monotonic):
        self.limits, self.clock = limits, clock
        self._done: dict[str, collections.deque] = {}  # login -> deque of (time, bytes, files), oldest first
        self._arriving: dict[str, list[int]] = {}  # login -> [bytes, files] of its uploads still arriving

    def _spent(self, who: str) -> tuple[int, int]:
        done = self._done.get(who)
        if done is None:
            return 0, 0
        while done and self.clock() - done[0][0] > self.limits.window:
            done.popleft()
        if not done:
            del self._done[who]
        return sum(d[1] for d in done), sum(d[2] for d in done)

    def left(self, who: str) -> tuple[int, int]:
        """(bytes, files) ``who`` may still upload now."""
        nbytes, files = self._spent(who)
        arriving = self._arriving.get(who, (0, 0))
        return (max(0, self.limits.bytes_per_login - nbytes - arriving[0]),
                max(0, self.limits.files_per_login - files - arriving[1]))

    def take(self, who: str, nbytes: int, files: int) -> str:
        """``nbytes`` and ``files`` more of an upload of ``who`` arrived: "" when they fit (they are counted),
        else the refusal (and they are not)."""
        left = self.left(who)
        if files > left[1]:
            return self._too_many()
        if nbytes > left[0]:
            return (f"upload refused: it ran past this login's {self.limits.bytes_per_login / MiB:g} MiB for "
                    f"{self._hours()}; nothing of it was kept (app.py --user-upload-mb)")
        arriving = self._arriving.setdefault(who, [0, 0])
        arriving[0] += nbytes
        arriving[1] += files
        return ""

    def settle(self, who: str, nbytes: int, files: int, kept: int | None) -> None:
        """An upload of ``who`` ended: its ``nbytes`` and ``files`` no longer arrive; with ``kept`` (how many
        files Gradio kept; None: it kept none) its bytes and those files count until the window passes."""
        arriving = self._arriving.get(who)
        if arriving is not None:
            arriving[0] -= nbytes
            arriving[1] -= files
            if arriving[0] <= 0 and arriving[1] <= 0:
                del self._arriving[who]
        if kept is not None:
            self._done.setdefault(who, collections.deque()).append((self.clock(), nbytes, kept))

    def refusal(self, who: str, declared: int | None) -> tuple[int, str]:
        """(status, message) refusing an upload that cannot fit before a byte of it is read, or (0, "")."""
        nbytes, files = self.left(who)
        if files <= 0:
            return 429, self._too_many()
        if declared is not None and declared > nbytes:
            return 413, (f"upload refused: {declared / MiB:.1f} MiB is more than the {nbytes / MiB:.1f} MiB left of "
                         f"this login's {self.limits.bytes_per_login / MiB:g} MiB for {self._hours()} "
                         "(app.py --user-upload-mb)")
        return 0, ""

    def _hours(self) -> str:
        return f"{self.limits.window / 3600:g} hours"

    def _too_many(self) -> str:
        return (f"upload refused: {self.limits.files_per_login} files were uploaded by this login in the last "
                f"{self._hours()}, the most it may; nothing of this upload was kept; try again later (app.py "
                "--user-upload-files)")


class FileParts:
    """Counts the files of a multipart body as it streams by: each ``filename`` of a part's headers (in any
    case; the word anywhere else in the body counts too, which errs only on the side of the budget)."""

    WORD = b"filename"

    def __init__(self):
        self.count, self._tail = 0, b""

    def feed(self, chunk: bytes) -> int:
        """The files that begin in ``chunk`` (a word split between two chunks counts once, in the second)."""
        data = self._tail + chunk.lower()
        found = data.count(self.WORD)
        self._tail = data[-(len(self.WORD) - 1):]
        self.count += found
        return found


class BodyRefused(MultiPartException):
    """Raised inside the app's reading of a body that passed its cap (a MultiPartException, so that Gradio's
    upload parser deletes the files it began)."""


class BodyLimits:
    """ASGI middleware: the caps of the module's docstring, on every HTTP request. The login a request carries
    is ``scope["maskloop.login"]`` (annotator.access.LoginRequired); without logins uploads are counted per
    client address."""

    def __init__(self, app, ledger: UploadLedger | None = None):
        self.app, self.ledger = app, ledger or UploadLedger()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        if path.endswith(UPLOAD_PATHS):
            return await self._upload(scope, receive, send)
        cap, what = cap_for(path)
        why = (f"request refused: a body of more than {cap:,} bytes; {what} needs at most that "
               f"(annotator/limits.py)")
        declared = _declared(scope)
        if declared is not None and declared > cap:
            return await answer(send, 413, why)
        if scope["method"] == "POST" and is_event(path):
            return await self._event(scope, receive, send, cap, why)
        seen = 0

        def more(chunk: bytes) -> str:
            nonlocal seen
            seen += len(chunk)
            return why if seen > cap else ""

        await _capped(self.app, scope, receive, send, more)

    async def _event(self, scope, receive, send, cap: int, why: str):
        """An event's body, read whole under ``cap``, then refused when it gives a file by URL, else handed on."""
        chunks, n = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunks.append(message.get("body", b""))
            n += len(chunks[-1])
            if n > cap:
                return await answer(send, 413, why)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        url = await asyncio.to_thread(file_by_url, body) if n > 2 ** 20 else file_by_url(body)
        if url:
            return await answer(send, 400, f"request refused: a file given by URL ({url[:100]}): the server fetches "
                                           "no files; upload it (/gradio_api/upload) and give the path it answers")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _upload(self, scope, receive, send):
        who = scope.get("maskloop.login") or f"client {(scope.get('client') or ('unknown',))[0]}"
        status, why = self.ledger.refusal(who, _declared(scope))
        if status:
            return await answer(send, status, why)
        got, parts = 0, FileParts()

        def more(chunk: bytes) -> str:
            nonlocal got
            files = parts.feed(chunk)
            why = self.ledger.take(who, len(chunk), files)
            if why:
                parts.count -= files
                return why
            got += len(chunk)
            return ""

        answer_body: list = []
        try:
            status = await _capped(self.app, scope, receive, send, more, answer_body)
        finally:
            self.ledger.settle(who, got, parts.count, _count(answer_body) if status == 200 else None)


def cap_for(path: str) -> tuple[int, str]:
    """(the body cap of the route at ``path``, what is sent there)."""
    if path.endswith("/component_server"):
        return CANVAS_BODY, "an edit message of the canvas"
    if path.endswith("/login"):
        return LOGIN_BODY, "a login"
    return API_BODY, "a call of the app"


def is_event(path: str) -> bool:
    """Whether ``path`` is one of Gradio's routes that run an event on the data it is sent (preprocessed:
    files fetched)."""
    return path.endswith("/gradio_api/queue/join") or any(
        f"/gradio_api/{route}/" in path for route in ("call", "run", "api"))


def file_by_url(body: bytes) -> str:
    """The first ``"path"`` in a JSON body that is an http(s) URL (a file Gradio would fetch), or ""; "" for a
    body that is not JSON (the app refuses it itself)."""
    try:
        stack = [json.loads(body)]
    except (ValueError, RecursionError):
        return ""
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str) and path[:8].lower().startswith(("http://", "https://")):
                return path
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return ""


def _declared(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _capped(app, scope, receive, send, more: Callable[[bytes], str], body: list | None = None) -> int:
    """Run ``app`` while ``more(chunk)`` passes each chunk of the request body ("" or why not). A chunk that does
    not pass stops the reading (BodyRefused) and the answer is 413 with its message. With ``body``, the chunks
    of the app's answer are collected there. Returns the answer's status."""
    state = {"why": "", "status": 0}

    async def counted():
        message = await receive()
        if message["type"] == "http.request":
            why = more(message.get("body", b""))
            if why:
                state["why"] = why
                raise BodyRefused(why)
        return message

    async def answered(message):
        if state["why"]:  # the app's answer to a body it did not get whole
            return
        if message["type"] == "http.response.start":
            state["status"] = message["status"]
        elif message["type"] == "http.response.body" and body is not None:
            body.append(message.get("body", b""))
        await send(message)

    try:
        await app(scope, counted, answered)
    except Exception:
        if not state["why"]:
            raise
    if state["why"]:
        if not state["status"]:
            await answer(send, 413, state["why"])
        return 413
    return state["status"]


def _count(chunks: list) -> int:
    """How many files Gradio's upload answer (a JSON list of their paths) names; 1 when it cannot be read."""
    try:
        got = json.loads(b"".join(chunks))
    except ValueError:
        return 1
    return len(got) if isinstance(got, list) else 1
