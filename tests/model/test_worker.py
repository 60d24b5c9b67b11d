"""The training worker process, end to end: it finds every setting in its job row (issue 8)."""

import time

from db import jobs
from model import api


def test_training_process_reads_its_settings_from_the_job_row(make_store, tmp_path):
    store = make_store(tmp_path / "w")
    api.fill_demo(store, n_images=16, labeled_train=8, size=64, seed=3)
    opts = api.TrainOptions(epochs=1, max_minutes=1.0, size="tiny", device="cpu", weights="none")
    job_id = api.start_training_process(store, opts)
    assert jobs.get(store, job_id).params["weights"] == "none"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and jobs.get(store, job_id).state in jobs.ACTIVE:
        time.sleep(1)
    job = jobs.get(store, job_id)
    log = (tmp_path / "w" / "jobs" / f"job-{job_id}.log").read_text()
    assert job.state == "done", (job.state, job.message, log[-2000:])
    assert job.result_version_id is not None and api.active_version(store).id == job.result_version_id
    pid, ended = job.pid, time.monotonic() + 10
    while time.monotonic() < ended and _zombie(pid):
        time.sleep(0.2)
    assert not _zombie(pid)  # the app reaped it: a long-running UI collects no zombie per fine-tune


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False
