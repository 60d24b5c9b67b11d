"""What one browser page (or one /label_image call) holds while it labels, and the server's bounded set of
them.

``Page``: the page's secret token (its canvas's direct calls carry it), its login and role, the sequence
numbers of the canvas's messages and answers, the images it came through, the display cache, and the open
image's ``LabelSession``. ``Pages``: every open page by token, within limits (``PageLimits``): a page ends
when idle, when its browser tab closes, when its login logs out or loses its account, and when the
server-wide or per-user budget needs room (the least recently used first). An ended page holds no
session; its next request is told why and to reload.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any, Callable

from annotator.history import DEFAULT_BUDGET
from annotator.labeling import LabelSession

RELOAD = "reload the page to go on labeling"


@dataclasses.dataclass(frozen=True)
class PageLimits:
    """Bounds on what open pages hold on the server."""

    idle_seconds: float = 30 * 60  # a page nobody used for this long ends
    max_pages: int = 200  # open pages on the server; the least recently used ends to make room
    max_per_user: int = 8  # open pages of one login
    max_bytes: int = 2 * 2 ** 30  # what all open pages hold (labels, undo steps, display caches), about
    history_bytes: int = DEFAULT_BUDGET  # each page's undo and redo steps


@dataclasses.dataclass(eq=False)
class Page:
    """One page's labeling state on the server (see the module's docstring)."""

    token: str
    user: str = ""
    owner: str = ""  # whose budgets it counts against: the login, or without logins its browser tab
    role: str | None = "admin"
    session: LabelSession | None = None
    seq: int = 0  # the last canvas message applied (annotator.canvas)
    rev: int = 0  # how many answers the canvas was sent: it ignores one older than what it shows
    trail: list[int] = dataclasses.field(default_factory=list)  # images opened before the current one
    next: list[int] = dataclasses.field(default_factory=list)  # the queue's next image (the browser prefetches it)
    display_cache: dict = dataclasses.field(default_factory=dict)  # mask crops as sent, the image's history
    browser: str | None = None  # the Gradio session (browser tab) it belongs to
    login: str = ""  # the login session it was opened in (annotator.access.Sessions.key; "" without logins)
    ended: str = ""  # why the page ended, when it did
    last_used: float = 0.0
    opens: int = 0  # opens asked for by this page (annotator.label_tab: a burst runs only its last)
    claimed: int | None = None  # the image this page holds for its user (db.claims), if any
    claim_renewed: float = 0.0  # when (time.monotonic) the page last renewed that claim
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)  # one request at a time

    @property
    def who(self) -> str:
        return self.owner or self.user

    @property
    def min_score(self) -> float:
        return self.session.min_score if self.session is not None else 0.0

    def nbytes(self) -> int:
        """About what the page holds: its labels, undo steps, refused edits and display cache."""
        ls = self.session
        if ls is None:
            return 0
        held = ls.instances.nbytes() + ls.edits.nbytes + sum(r.mine.nbytes() for r in ls.pending)
        sent = self.display_cache.get("sent")  # (the last answer's instances, for a delta: about 500 bytes each)
        return (held + sum(len(v["counts"]) + 100 for v in self.display_cache.get("crops", {}).values())
                + (500 * len(sent[2]) if sent else 0))

    def end(self, why: str) -> None:
        """Free what the page holds; its next request is answered with ``why``."""
        self.ended = why
        self.session = None
        self.display_cache.clear()


class Pages:
    """The open pages by token, bounded by ``PageLimits``; thread-safe."""

    def __init__(self, limits: PageLimits = PageLimits(), clock: Callable[[], float] = time.monotonic,
                 on_end: Callable[[Page], Any] | None = None):
        self.limits, self.clock, self.on_end = limits, clock, on_end
        self._pages: collections.OrderedDict[str, Page] = collections.OrderedDict()  # least recently used first
        self._gone: collections.OrderedDict[str, str] = collections.OrderedDict()  # why recent pages ended
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pages)

    def __contains__(self, token: str) -> bool:
        return token in self._pages

    def add(self, page: Page) -> None:
        """Keep ``page`` (a new one, or one that opened another image); make room first."""
        with self._lock:
            page.ended = ""
            page.last_used = self.clock()
            self._pages[page.token] = page
            self._pages.move_to_end(page.token)
            gone = self._sweep()
            mine = [p for p in self._pages.values() if p.who == page.who]
            for p in mine[:max(0, len(mine) - self.limits.max_per_user)]:
                gone.append(self._drop(p, f"you have more than {self.limits.max_per_user} pages open; this one "
                                          f"was the least recently used and was closed: {RELOAD}"))
            held = sum(p.nbytes() for p in self._pages.values())
            while len(self._pages) > self.limits.max_pages or (len(self._pages) > 1 and held > self.limits.max_bytes):
                oldest = next(iter(self._pages.values()))
                if oldest is page:
                    break
                held -= oldest.nbytes()
                gone.append(self._drop(oldest, f"the server had too many open pages and closed this one, the "
                                               f"least recently used: {RELOAD}"))
        self._ended(gone)

    def get(self, token: Any, use: bool = True) -> Page | None:
        """The open page with this token, or None; with ``use`` it is now the most recently used (a
        heartbeat that only says the tab is still there passes False: an open, untouched tab still idles)."""
        if not isinstance(token, str):
            return None
        with self._lock:
            gone = self._sweep()
            page = self._pages.get(token)
            if page is not None and use:
                page.last_used = self.clock()
                self._pages.move_to_end(token)
        self._ended(gone)
        return page

    def end(self, token: str, why: str) -> None:
        with self._lock:
            page = self._pages.get(token)
            gone = [self._drop(page, why)] if page is not None else []
        self._ended(gone)

    def end_where(self, test: Callable[[Page], bool], why: str) -> int:
        """End every page for which ``test`` holds (a login's pages on logout, a closed tab's); how many."""
        with self._lock:
            gone = [self._drop(p, why) for p in list(self._pages.values()) if test(p)]
        self._ended(gone)
        return len(gone)

    # --- inside (under the lock) ---------------------------------------------------------------------
    def _sweep(self) -> list[Page]:
        limit = self.clock() - self.limits.idle_seconds
        idle = [p for p in self._pages.values() if p.last_used < limit]
        minutes = self.limits.idle_seconds / 60
        return [self._drop(p, f"this page was idle for over {minutes:g} minutes and was closed (unsaved edits "
                              f"are not kept): {RELOAD}") for p in idle]

    def why_ended(self, token: Any) -> str:
        """Why the page with this token ended, if it did lately (the last thousand are remembered)."""
        with self._lock:
            return self._gone.get(token, "") if isinstance(token, str) else ""

    def _drop(self, page: Page, why: str) -> Page:
        self._pages.pop(page.token, None)
        self._gone[page.token] = why
        while len(self._gone) > 1000:
            self._gone.popitem(last=False)
        page.ended = why
        return page

    def _ended(self, pages: list[Page]) -> None:
        """Free the ended pages' sessions outside the registry's lock (a page's own lock may be held by a
        request in progress: it finishes first). Callers never hold a page's lock while they call into the
        registry, so this cannot wait on itself."""
        for p in pages:
            with p.lock:
                if self._pages.get(p.token) is p:
                    continue  # opened again meanwhile: it lives on
                p.end(p.ended)
            if self.on_end is not None:
                self.on_end(p)


class EditRate:
    """Each login's edit messages within a rate (a token bucket per user): a message costs one unit, a brush
    stroke more in proportion to the pixels it may draw, so one user's flood of heavy strokes waits for its
    own budget instead of taking the server's cores from everyone else. Thread-safe."""

    def __init__(self, per_second: float = 20.0, burst: float = 100.0, clock: Callable[[], float] = time.monotonic):
        self.per_second, self.burst, self.clock = per_second, burst, clock
        self._left: dict[str, tuple[float, float]] = {}  # user -> (units left, when)
        self._lock = threading.Lock()

    def take(self, user: str, cost: float) -> float:
        """Charge ``cost`` to ``user``; 0.0 when allowed, else the seconds to wait (nothing is charged)."""
        now = self.clock()
        with self._lock:
            left, when = self._left.get(user, (self.burst, now))
            left = min(self.burst, left + (now - when) * self.per_second)
            need = min(cost, self.burst)  # a message dearer than the burst waits for a full bucket
            if left < need:
                self._left[user] = (left, now)
                return (need - left) / self.per_second
            self._left[user] = (left - need, now)
            if len(self._left) > 10_000:  # users idle long enough to be full again are forgotten
                self._left = {u: v for u, v in self._left.items()
                              if v[0] + (now - v[1]) * self.per_second < self.burst}
            return 0.0
