"""Job rows: long work (training, batch proposals) keeps its state here, so a page reload or a second
browser sees the same progress, and a crash leaves the job marked failed.

The process doing a job writes a heartbeat into its row every HEARTBEAT_EVERY seconds (``keep_alive``).
An active job whose heartbeat is older than STALE_AFTER is failed, whatever its pid says: pids are reused
(in containers almost at once), and with PostgreSQL the process may run on another machine. On the same
host, a pid that is gone fails the job at once.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import select, text, update

from db.errors import UserError
from db.schema import Job, utcnow
from db.store import Store

ACTIVE = ("queued", "running")
HEARTBEAT_EVERY = 10.0  # seconds
STALE_AFTER = 60.0  # seconds without a heartbeat before an active job counts as dead


class JobRunning(UserError):
    """A job of this kind is already active in this store (one at a time, whichever process started it)."""


def create(store: Store, kind: str, params: dict[str, Any] | None = None) -> int:
    """A new queued job; refused (JobRunning, naming the active one) while another job of this kind is active
    in the store. The check and the insert are one transaction holding the write lock (SQLite) or a lock
    on the jobs table (PostgreSQL), so two processes cannot both start one."""
    fail_orphans(store)  # a job whose process died does not block the next one
    with store.transaction() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE"))
        active = s.scalars(select(Job).where(Job.kind == kind, Job.state.in_(ACTIVE)).order_by(Job.id)).first()
        if active is not None:
            raise JobRunning(f"a {kind} job is already running in this store (job {active.id}, {active.state}: "
                             f"{active.message}); one at a time: wait for it or cancel it")
        job = Job(kind=kind, state="queued", params=params or {}, detail={}, message="queued",
                  heartbeat_at=utcnow())
        s.add(job)
        s.flush()
        return job.id


def get(store: Store, job_id: int) -> Job | None:
    with store.session() as s:
        return s.get(Job, job_id)


def latest(store: Store, kind: str) -> Job | None:
    with store.session() as s:
        return s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id.desc())).first()


def running(store: Store, kind: str) -> Job | None:
    """The active job of this kind, once jobs whose process has gone are marked failed."""
    fail_orphans(store)
    return active(store, kind)


def active(store: Store, kind: str) -> Job | None:
    """The job of this kind marked active, as the table says (``running`` first fails dead ones)."""
    with store.session() as s:
        return s.scalars(select(Job).where(Job.kind == kind, Job.state.in_(ACTIVE)).order_by(Job.id)).first()


def set_state(store: Store, job_id: int, state: str, message: str | None = None, **values: Any) -> None:
    vals: dict[str, Any] = {"state": state, "updated_at": utcnow(), **values}
    if message is not None:
        vals["message"] = message
    if state == "running":
        vals.setdefault("pid", os.getpid())
        vals.setdefault("host", socket.gethostname())
    if state in ACTIVE:
        vals["heartbeat_at"] = utcnow()
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**vals))


def report(store: Store, job_id: int, progress: float, message: str, detail: dict[str, Any]) -> bool:
    """Write progress (which is also a heartbeat); returns True when a cancel was requested."""
    now = utcnow()
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(progress=progress, message=message, detail=detail,
                                                              updated_at=now, heartbeat_at=now))
        return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def heartbeat(store: Store, job_id: int) -> None:
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE)).values(heartbeat_at=utcnow()))


@contextmanager
def keep_alive(store: Store, job_id: int, every: float = HEARTBEAT_EVERY) -> Iterator[None]:
    """A background thread writes the job's heartbeat while the block runs (through long steps that report
    no progress: loading weights, evaluating, writing a checkpoint)."""
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            try:
                heartbeat(store, job_id)
            except Exception:  # noqa: BLE001 - a missed beat must not kill the job; the next one may work
                pass

    t = threading.Thread(target=beat, name=f"maskloop-heartbeat-{job_id}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)


def request_cancel(store: Store, job_id: int) -> None:
    """Ask the job to stop at its next step. A job nobody is running any more (no heartbeat for
    STALE_AFTER) is marked cancelled at once."""
    now = utcnow()
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, updated_at=now))
        job = s.get(Job, job_id)
        if job is not None and job.state in ACTIVE and _stale(job, now):
            job.state, job.message = "cancelled", "cancelled (its process had stopped answering)"


def _stale(job: Job, now: dt.datetime) -> bool:
    """No heartbeat within STALE_AFTER, either way: one from the future is as untrustworthy as an old one
    (a wrong clock, or a hand-edited row), and would otherwise keep the job 'running' forever. Hosts that
    share a database keep their clocks in step (NTP)."""
    last = job.heartbeat_at or job.updated_at or job.created_at
    return last is None or abs((now - last).total_seconds()) > STALE_AFTER


def fail_orphans(store: Store) -> int:
    """Active jobs nobody is running any more (crash, kill, reboot, a reused pid) are marked failed,
    never left 'running': no heartbeat for STALE_AFTER seconds, or, on this host, a process that is gone."""
    n = 0
    now = utcnow()
    here = socket.gethostname()
    with store.transaction() as s:
        for job in s.scalars(select(Job).where(Job.state.in_(ACTIVE))):
            if _stale(job, now):
                age = (now - (job.heartbeat_at or job.updated_at or job.created_at)).total_seconds()
                job.state, job.message = "failed", f"the job's process stopped answering (no heartbeat for {age:.0f} s)"
                n += 1
            elif job.pid and job.host in (None, here) and not _alive(job.pid):
                job.state, job.message = "failed", f"the job's process ({job.pid}) ended without finishing"
                n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
