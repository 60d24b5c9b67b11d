"""Who has which image open in the Label tab, so that two people on one image hear of each other before their
saves collide (the second save is refused and kept for review: annotator.conflicts).

One small registry in the server's memory, owned by the Label tab: each page is one entry under its secret
token (annotator.label_tab), with the image it shows, its user and the browser it runs in. ``LabelTab.open`` enters
a page when it opens an image; the canvas polls ``poll`` every few seconds (the heartbeat, and the answer:
who else is on the image). An entry not heard of for ``ttl`` seconds is gone (a closed tab); at most ``cap``
entries are kept, the longest silent dropped first. A server restart forgets everything, and the pages enter
again with their next poll.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any, Callable

TTL = 30.0  # seconds without a poll after which a page no longer counts as on its image
CAP = 10_000  # entries at most
MAX_BROWSER_ID = 64  # characters of the browser's own id (canvas.js keeps one in localStorage)


@dataclasses.dataclass
class Visit:
    image_id: int
    user: str
    browser: str | None  # None until the page's first poll says which browser it is
    since: float  # wall-clock seconds (epoch) when the page opened the image
    seen: float  # the registry's clock when the page was last heard of


class Presence:
    """The pages on each image, by token; thread-safe (the server functions run in worker threads)."""

    def __init__(self, ttl: float = TTL, cap: int = CAP, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.ttl, self.cap, self._clock, self._wall = ttl, cap, clock, wall
        self._visits: collections.OrderedDict[str, Visit] = collections.OrderedDict()  # longest silent first
        self._lock = threading.Lock()

    def open(self, token: str, image_id: int, user: str, browser: str | None = None) -> None:
        """The page ``token`` shows ``image_id`` now (its ``since`` is kept while it stays on that image)."""
        with self._lock:
            now = self._clock()
            old = self._visits.pop(token, None)
            if old is not None and old.image_id == image_id and self._alive(old, now):
                old.user, old.seen, old.browser = user, now, browser or old.browser
                self._visits[token] = old
            else:
                self._visits[token] = Visit(image_id, user, browser, self._wall(), now)
            self._expire(now)

    def close(self, token: str) -> None:
        with self._lock:
            self._visits.pop(token, None)

    def others(self, token: str) -> list[dict[str, Any]]:
        """The other pages on the same image as ``token``, oldest first: ``user``, ``since`` (epoch seconds),
        ``same_browser`` (another tab of this browser), ``same_user``."""
        with self._lock:
            self._expire(self._clock())
            me = self._visits.get(token)
            if me is None:
                return []
            out = [{"user": v.user, "since": v.since, "same_user": v.user == me.user,
                    "same_browser": v.browser is not None and v.browser == me.browser}
                   for t, v in self._visits.items() if t != token and v.image_id == me.image_id]
        return sorted(out, key=lambda o: o["since"])

    def poll(self, message: Any, page: Any) -> dict[str, Any]:
        """The canvas's presence call (``{"token", "browser", "leaving"}``) for the open page (an
        annotator.page.Page; None when the token is unknown or the page ended): a heartbeat, then who else
        is on its image."""
        ls = getattr(page, "session", None)
        if ls is None or not isinstance(message, dict):
            return {"image_id": None, "others": []}
        token, browser = page.token, message.get("browser")
        if message.get("leaving") is True:
            self.close(token)
            return {"image_id": ls.image_id, "others": []}
        browser = browser[:MAX_BROWSER_ID] if isinstance(browser, str) and browser else None
        self.open(token, ls.image_id, page.user, browser)
        return {"image_id": ls.image_id, "others": self.others(token)}

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._visits)

    def _alive(self, v: Visit, now: float) -> bool:
        return now - v.seen <= self.ttl

    def _expire(self, now: float) -> None:
        """Drop the entries silent for over ``ttl`` seconds, and the longest silent beyond ``cap``."""
        while self._visits:
            token, v = next(iter(self._visits.items()))
            if self._alive(v, now) and len(self._visits) <= self.cap:
                break
            del self._visits[token]
