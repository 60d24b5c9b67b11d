"""Entry point of the separate training process: ``python -m model.worker --store DIR [--db URL] --job ID``.
Everything else it needs (epochs, size, device, weights, ...) is in the job row's params (TrainOptions). It opens
an existing store only (model.api.start_training_process names it by absolute path)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from db import jobs
from db.errors import UserError
from db.store import Settings, Store, sqlite_file
from model.api import train_job
from model.train import TrainOptions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--db", default=None)
    ap.add_argument("--job", type=int, required=True)
    args = ap.parse_args(argv)
    settings = Settings(store_dir=Path(args.store), db_url=args.db)
    folder, db_file = settings.store_dir.resolve(), sqlite_file(settings.url)
    if db_file is not None and not db_file.resolve().is_file():  # a job's store exists: never make an empty one
        print(f"no job {args.job}: there is no store database {db_file.resolve()} (store folder {folder}); was the "
              "process given a relative path in another working folder?", file=sys.stderr)
        return 2
    store = Store(settings)
    job = jobs.get(store, args.job)
    if job is None:
        print(f"no job {args.job} in the store in {folder} (database {store.engine.url}): was the process given "
              "another store than the one that made the job?", file=sys.stderr)
        return 2
    if job.state != "queued":  # failed or cancelled while this process was starting
        print(f"job {args.job} is {job.state}; not starting it", file=sys.stderr)
        return 1
    opts = TrainOptions(**(job.params or {}))
    try:
        train_job(store, opts, job_id=args.job)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
