"""The store's own settings (one row per key in ``settings``), and the heartbeats of proposal workers.

A setting is typed where it is read (``fine_tune_every``); an unknown or malformed stored value reads as the
default, never as an error. Worker heartbeats let the app know whether a worker (``app.py propose --worker``)
is proposing for the store, so that it leaves the work to them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select

from db.errors import UserError
from db.schema import Setting, utcnow
from db.store import Store

FINE_TUNE_EVERY = "fine_tune_every"
WORKER_PREFIX = "worker:"
WORKER_ALIVE = 30.0  # seconds: a worker heard of within this is running
MAX_FINE_TUNE_EVERY = 1_000_000


def get(store: Store, key: str, default: Any = None) -> Any:
    with store.session() as s:
        row = s.get(Setting, key)
        return default if row is None else row.value


def put(store: Store, key: str, value: Any) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= 50:
        raise UserError("a setting's key has 1 to 50 characters")
    with store.transaction() as s:
        row = s.get(Setting, key)
        if row is None:
            s.add(Setting(key=key, value=value))
        else:
            row.value = value


def fine_tune_every(store: Store) -> int:
    """After how many newly saved images a fine-tune starts by itself (0: never)."""
    n = get(store, FINE_TUNE_EVERY, 0)
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_FINE_TUNE_EVERY else 0


def set_fine_tune_every(store: Store, n: Any) -> int:
    """Set it (a whole number 0..MAX_FINE_TUNE_EVERY; 0 turns it off); UserError naming a bad value."""
    try:
        f = float(n)
        ok = f.is_integer() and 0 <= f <= MAX_FINE_TUNE_EVERY
    except (TypeError, ValueError):
        ok = False
    if isinstance(n, bool) or not ok:
        raise UserError(f"fine-tune after every N saved images: N must be a whole number from 0 (off) to "
                        f"{MAX_FINE_TUNE_EVERY}, not {n!r}")
    put(store, FINE_TUNE_EVERY, int(f))
    return int(f)


def worker_beat(store: Store, worker: str) -> None:
    """Worker ``worker`` is alive now."""
    put(store, (WORKER_PREFIX + worker)[:50], utcnow().isoformat())


def worker_gone(store: Store, worker: str) -> None:
    with store.transaction() as s:
        s.execute(delete(Setting).where(Setting.key == (WORKER_PREFIX + worker)[:50]))


def workers_alive(store: Store, within: float = WORKER_ALIVE) -> list[str]:
    """The proposal workers heard of within ``within`` seconds, by name."""
    since = utcnow() - dt.timedelta(seconds=within)
    with store.session() as s:
        rows = s.execute(select(Setting.key, Setting.value).where(Setting.key.startswith(WORKER_PREFIX))).all()
    alive = []
    for key, value in rows:
        try:
            if dt.datetime.fromisoformat(value) >= since:
                alive.append(key[len(WORKER_PREFIX):])
        except (TypeError, ValueError):
            continue
    return sorted(alive)
