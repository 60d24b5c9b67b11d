"""Job rows: long work (training, batch proposals) keeps its state here, so a page reload or a second
browser sees the same progress, and a crash leaves the job marked failed."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select, update

from db.schema import Job, utcnow
from db.store import Store

ACTIVE = ("queued", "running")


def create(store: Store, kind: str, params: dict[str, Any] | None = None) -> int:
    with store.transaction() as s:
        job = Job(kind=kind, state="queued", params=params or {}, detail={}, message="queued")
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
    with store.session() as s:
        return s.scalars(select(Job).where(Job.kind == kind, Job.state.in_(ACTIVE)).order_by(Job.id)).first()


def set_state(store: Store, job_id: int, state: str, message: str | None = None, **values: Any) -> None:
    vals: dict[str, Any] = {"state": state, "updated_at": utcnow(), **values}
    if message is not None:
        vals["message"] = message
    if state == "running":
        vals.setdefault("pid", os.getpid())
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**vals))


def report(store: Store, job_id: int, progress: float, message: str, detail: dict[str, Any]) -> bool:
    """Write progress; returns True when a cancel was requested."""
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(progress=progress, message=message, detail=detail,
                                                              updated_at=utcnow()))
        return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def request_cancel(store: Store, job_id: int) -> None:
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, updated_at=utcnow()))


def fail_orphans(store: Store) -> int:
    """Jobs whose process is gone (crash, kill, reboot) are marked failed, never left 'running'."""
    n = 0
    with store.transaction() as s:
        for job in s.scalars(select(Job).where(Job.state.in_(ACTIVE))):
            if job.pid and not _alive(job.pid):
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
