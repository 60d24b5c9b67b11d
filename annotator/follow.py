"""The loop running itself in the app process: proposals follow the active model, and a fine-tune starts after
every N newly saved images when an admin asked for it.

``Follower`` is one background thread beside annotator.background.BackgroundProposer, sharing its model and
its one-model-run-at-a-time lock. Every few seconds it:

1. starts a fine-tune when ``db.settings.fine_tune_every`` (N) is set, N images were saved as done since the
   last fine-tune started, and none is running (db.jobs refuses a second one, whichever process asks);
2. when no proposal worker (``app.py propose --worker``) is alive, re-proposes a few images not done whose
   proposals are not the active version's, in the labeling queue's order (most needed first), claiming them as
   workers do (db.annotations.claim_images: never an image a person holds, never one a worker holds). It
   yields to the person's own work: nothing while proposals for the next images or assist features wait.

A page whose image was passed over (it is open) hears of the newer model through its presence poll and
refreshes in place (annotator.label_tab LabelTab._news, the canvas's "refresh" op).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from db import annotations, jobs, settings
from db.errors import UserError
from db.store import Store
from model import api

log = logging.getLogger(__name__)

EVERY = 5.0  # seconds between looks
BATCH = 2  # images re-proposed per model run (the person's assist waits for at most one batch)
CLAIM_SECONDS = 600.0


class Follower:
    def __init__(self, store: Store, proposer: Any, every: float = EVERY, batch: int = BATCH):
        self.store, self.proposer, self.every, self.batch = store, proposer, every, batch
        self.name = f"app:{socket.gethostname()}:{os.getpid()}"[:200]
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Follower":
        self._thread = threading.Thread(target=self._run, name="maskloop-follow", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.store.closed:  # (a test's store, or the app shutting down)
                return
            try:
                self.fine_tune_if_due()
                while not self._stop.is_set() and self.repropose_some():
                    pass
            except Exception as e:  # noqa: BLE001 - shown in the Model tab, never fatal; tried again later
                self.last_error = f"following the active model: {e}"
                log.warning(self.last_error)

    def repropose_some(self) -> int:
        """One batch of proposals from the active version on images not done that lack them; how many images
        (0: nothing to do now, a worker does it, or the person's own work comes first)."""
        if self.proposer.busy() or settings.workers_alive(self.store):
            return 0
        with self.proposer.model_lock():
            p = self.proposer.predictor()
            if p is None or p.version is None:
                return 0
            done, total = annotations.proposal_progress(self.store, p.version.id)
            if done >= total:  # (a read, before the claim's writing transaction)
                return 0
            ids = annotations.claim_images(self.store, self.name, p.version.id, self.batch, CLAIM_SECONDS,
                                           order=annotations.queue(self.store))
            if not ids:
                return 0
            try:
                r = api.propose_images(self.store, ids, self.proposer.options, self.proposer.min_score, predictor=p)
            except BaseException:
                annotations.release_claims(self.store, self.name, ids)
                raise
        if r["skipped"]:
            log.info("re-proposing skipped %s", r["skipped"])
        return len(ids)

    def fine_tune_if_due(self) -> int | None:
        """Start a fine-tune when one is due (see the module's docstring); its job id, or None."""
        n = settings.fine_tune_every(self.store)
        if not n or jobs.running(self.store, "train") is not None:
            return None
        last = jobs.latest(self.store, "train")
        if annotations.saved_since(self.store, last.created_at if last is not None else None) < n:
            return None
        if api.training_data_problem(self.store):
            return None
        opts = api.TrainOptions(device=self.proposer.options.device, weights=self.proposer.options.weights)
        if last is not None and isinstance(last.params, dict):  # as the last fine-tune was asked for
            try:
                opts = api.TrainOptions(**last.params)
            except TypeError:
                pass
        try:
            job_id = api.start_training_process(self.store, opts)
        except UserError as e:  # one started elsewhere meanwhile
            log.info("no fine-tune started: %s", e)
            return None
        log.info("started fine-tune job %s: %s images saved since the last one", job_id, n)
        return job_id
