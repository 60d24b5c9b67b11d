"""Job liveness by heartbeat (issue 7): a reused pid cannot keep a dead job 'running' forever."""

import datetime as dt
import os
import time

from sqlalchemy import update

from db import jobs
from db.schema import Job, utcnow


def _age_heartbeat(store, job_id, seconds):
    with store.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id)
                  .values(heartbeat_at=utcnow() - dt.timedelta(seconds=seconds)))


def test_job_whose_pid_belongs_to_another_live_process_fails_without_heartbeat(store):
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "running", "training", pid=os.getpid())  # alive: this very test process
    assert jobs.running(store, "train").id == jid
    _age_heartbeat(store, jid, jobs.STALE_AFTER + 5)
    assert jobs.running(store, "train") is None  # a new fine-tune may start
    j = jobs.get(store, jid)
    assert j.state == "failed" and "no heartbeat" in j.message


def test_cancel_of_a_job_nobody_runs_takes_effect_at_once(store):
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "running", "training", pid=os.getpid())
    _age_heartbeat(store, jid, jobs.STALE_AFTER + 1)
    jobs.request_cancel(store, jid)
    assert jobs.get(store, jid).state == "cancelled"


def test_cancel_of_a_live_job_only_asks(store):
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "running", "training")
    jobs.request_cancel(store, jid)
    j = jobs.get(store, jid)
    assert j.state == "running" and j.cancel_requested


def test_keep_alive_writes_heartbeats_while_work_reports_nothing(store):
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "running", "evaluating")
    _age_heartbeat(store, jid, 1000)
    with jobs.keep_alive(store, jid, every=0.05):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (utcnow() - jobs.get(store, jid).heartbeat_at).total_seconds() > 10:
            time.sleep(0.05)
    assert (utcnow() - jobs.get(store, jid).heartbeat_at).total_seconds() < 10
    assert jobs.fail_orphans(store) == 0


def test_a_heartbeat_from_the_future_does_not_keep_a_job_running_forever(store):
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "running", "training", pid=os.getpid())
    _age_heartbeat(store, jid, -86400)  # a day ahead: a wrong clock or a hand-edited row
    assert jobs.running(store, "train") is None
    assert jobs.get(store, jid).state == "failed"


def test_one_job_of_a_kind_at_a_time_per_store_whoever_starts_it(store):
    import pytest

    jid = jobs.create(store, "train", {})  # e.g. the UI's fine-tune
    with pytest.raises(jobs.JobRunning, match=f"already running in this store \\(job {jid}, queued"):
        jobs.create(store, "train", {})  # e.g. `app.py train` meanwhile
    assert jobs.create(store, "propose", {})  # another kind is not held back
    jobs.set_state(store, jid, "done", "finished")
    assert jobs.create(store, "train", {}) > jid


def test_a_dead_job_does_not_block_the_next_one(store):
    jid = jobs.create(store, "train", {})
    _age_heartbeat(store, jid, jobs.STALE_AFTER + 5)
    assert jobs.create(store, "train", {}) > jid
    assert jobs.get(store, jid).state == "failed"
