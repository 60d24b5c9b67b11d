"""The training worker process, end to end: it finds every setting in its job row (issue 8)."""

import os
import time
from pathlib import Path

from db import jobs
from db.store import Settings, absolute_db_url
from model import api, worker


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


class _Started:
    """What subprocess.Popen was asked to start (the test starts nothing)."""

    def __init__(self, args, **kwargs):
        self.args, self.kwargs, self.pid = args, kwargs, os.getpid()  # (a live pid: the job is not failed)

    def wait(self):
        return 0


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_a_job_started_from_the_ui_opens_that_store_by_absolute_path_whatever_the_working_folder(
        make_store, tmp_path, monkeypatch, capsys):
    """app.py started with a relative --store: the training process (run in the repository folder) used to
    open another store there ("no job 2", an empty labels.db in the repository)."""
    monkeypatch.chdir(tmp_path)
    store = make_store(Path("rel") / "store")  # relative, as `app.py --store rel/store` makes it
    started = []
    monkeypatch.setattr(api.subprocess, "Popen", lambda args, **kw: started.append(_Started(args, **kw)) or started[-1])
    job_id = api.start_training_process(store, api.TrainOptions(epochs=1, size="tiny", device="cpu"))
    args, cwd = started[0].args, started[0].kwargs["cwd"]
    assert Path(_option(args, "--store")) == tmp_path.resolve() / "rel" / "store"
    assert _option(args, "--db") == store.settings.db_url  # None on SQLite; a server's URL as it is
    assert Path(cwd).is_absolute() and (Path(cwd) / "model" / "worker.py").is_file()
    assert api.job_log(store, job_id) == tmp_path.resolve() / "rel" / "store" / "jobs" / f"job-{job_id}.log"
    assert api.job_log(store, job_id).is_file()
    # the process, from its own working folder, finds this job in this store (cancelled here, so it stops there)
    jobs.set_state(store, job_id, "cancelled", "cancelled by the test")
    monkeypatch.chdir(cwd)
    assert worker.main(args[args.index("model.worker") + 1:]) == 1
    assert f"job {job_id} is cancelled" in capsys.readouterr().err
    assert not (Path(cwd) / "rel").exists()


def test_a_relative_sqlite_database_is_named_by_absolute_path_for_another_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings(store_dir=Path("st"), db_url="sqlite:///db/labels.db").absolute()
    assert s.store_dir == tmp_path.resolve() / "st" and s.db_url == f"sqlite:///{tmp_path.resolve()}/db/labels.db"
    for unchanged in (None, "sqlite:////abs/labels.db", "sqlite://", "sqlite:///:memory:",
                      "postgresql+psycopg://u:secret@host:5432/db", "sqlite:///file:x.db?mode=ro&uri=true"):
        assert absolute_db_url(unchanged) == unchanged


def test_the_worker_names_a_store_that_is_not_there_and_makes_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert worker.main(["--store", "rel/store", "--job", "2"]) == 2
    err = capsys.readouterr().err
    assert f"no job 2: there is no store database {tmp_path.resolve()}/rel/store/labels.db" in err
    assert not (tmp_path / "rel").exists()
