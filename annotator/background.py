"""Model work done in a background thread while the person works, so opening an image shows its proposals at
once and the assist tool answers at once: proposals for the next images, and the backbone features that assist
prompts use for the opened image and the next ones. Uses the active model through model.api; one model run at
a time."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from typing import Iterable

from db import annotations
from db.errors import UserError
from db.store import Store
from model import api

log = logging.getLogger(__name__)

_NOW, _SOON = 0, 1  # queue priorities: the opened image's assist features, then everything else in order


class BackgroundProposer:
    def __init__(self, store: Store, options: api.ModelOptions | None = None, min_score: float = 0.3):
        self.store, self.min_score = store, min_score
        self.options = options or api.ModelOptions()
        # (priority, order, kind "propose" | "warm", warm generation, image id)
        self._queue: "queue.PriorityQueue[tuple[int, int, str, int, int]]" = queue.PriorityQueue()
        self._order = itertools.count()
        self._pending: set[int] = set()
        self._generations = itertools.count(1)
        self._warm_generation = 0  # a warm() supersedes the features still queued by the ones before it
        self._lock = threading.Lock()  # one model run at a time, shared with "propose again" and assist
        self._predictor = None
        self._assistant = None
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="maskloop-proposals", daemon=True)
        self._thread.start()

    def busy(self) -> bool:
        """Whether work for the people labeling waits (proposals for their next images, assist features)."""
        return bool(self._queue.unfinished_tasks)

    def model_lock(self) -> threading.Lock:
        """The one-model-run-at-a-time lock (annotator.follow runs its batches under it too)."""
        return self._lock

    def predictor(self):
        """The active model's predictor, reloaded when another version becomes active. None: no model."""
        self._predictor = api.active_predictor(self.store, self.options, self._predictor)
        return self._predictor

    def assistant(self):
        """The active model's assist (keeping its cached features while that version stays active), on the
        network of ``predictor()``: one copy of it in memory for proposals and assist. None: no model;
        UserError: a round-0 model, which cannot be prompted. Call with the lock held."""
        self._assistant = api.assistant(self.store, self.options, self._assistant, self.predictor)
        return self._assistant

    def want(self, image_ids: Iterable[int]) -> None:
        """Queue these images for proposals if they have none yet (status new) and no problem is recorded on
        them (the model could not use them when it tried: "Propose again", a worker or app.py propose tries
        again)."""
        ids = list(image_ids)
        new = {i for i, im in annotations.images(self.store, ids).items() if im.status == "new" and not im.problem}
        for i in ids:
            if i in new and i not in self._pending:
                self._pending.add(i)
                self._queue.put((_SOON, next(self._order), "propose", 0, i))

    def warm(self, image_ids: Iterable[int]) -> None:
        """Compute the assist features of these images in the background: the first (the opened image) before
        any other queued work, the rest (the next images) in turn. Features still queued by an earlier call are
        dropped. Does nothing without a fine-tuned model."""
        generation = self._warm_generation = next(self._generations)
        for k, i in enumerate(image_ids):
            self._queue.put((_NOW if k == 0 else _SOON, next(self._order), "warm", generation, i))

    def features_ready(self, image_id: int) -> bool:
        """Whether the assist features of this image are cached for the active model's assist."""
        return api.assist_features_ready(self.store, self._assistant, image_id)

    def assist_box(self, image_id: int, box_xyxy, category_id: int | None = None) -> dict:
        """The active model's instance for a box a labeler drew (model.api.assist_box); writes nothing. Shares
        the one-model-run-at-a-time lock and the model with the background proposals."""
        with self._lock:
            return api.assist_box(self.store, self.assistant(), image_id, box_xyxy, category_id)

    def assist_point(self, image_id: int, x: float, y: float, category_id: int | None = None) -> dict:
        """The active model's best detection covering a point a labeler clicked (model.api.assist_point);
        writes nothing. Shares the lock and the model as ``assist_box`` does."""
        with self._lock:
            return api.assist_point(self.store, self.assistant(), image_id, x, y, category_id)

    def outdated(self, image_id: int) -> int | None:
        """The active model version's id when the image is not done and its proposals are not that version's
        (made by an earlier one, imported, or none yet); else None."""
        v = api.active_version(self.store)
        im = annotations.images(self.store, [image_id]).get(image_id)
        if v is None or im is None or im.status == "done" or im.proposed_version_id == v.id:
            return None
        return v.id

    def propose_now(self, image_id: int) -> dict:
        with self._lock:
            p = self.predictor()
            if p is None:
                raise UserError("no model yet: fine-tune one in the Model tab first")
            r = api.propose_images(self.store, [image_id], self.options, self.min_score, predictor=p)
        if image_id in r["skipped"]:
            raise UserError(f"the model cannot use image {image_id}, so it proposed nothing: {r['skipped'][image_id]}")
        return r

    def _run(self) -> None:
        while True:
            _, _, kind, generation, image_id = self._queue.get()
            try:
                if kind == "warm":
                    self._warm_one(image_id, generation)
                else:
                    self._propose_one(image_id)
            except Exception as e:  # noqa: BLE001 - a background failure is shown in the UI, never fatal
                what = "assist features" if kind == "warm" else "proposals"
                self.last_error = f"background {what} for image {image_id} failed: {e}"
                log.warning(self.last_error)
            finally:
                if kind == "propose":
                    self._pending.discard(image_id)
                self._queue.task_done()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queued work to be done; whether it is."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks

    def _propose_one(self, image_id: int) -> None:
        with self._lock:
            im = annotations.images(self.store, [image_id]).get(image_id)
            p = self.predictor() if im is not None and im.status == "new" else None
            if p is not None:
                r = api.propose_images(self.store, [image_id], self.options, self.min_score, predictor=p)
                if r["skipped"]:  # recorded on the image; said once in the Label tab
                    self.last_error = f"background proposals skipped image {image_id}: {r['skipped'][image_id]}"

    def _warm_one(self, image_id: int, generation: int) -> None:
        with self._lock:
            if generation != self._warm_generation:  # the person has moved on since this was queued
                return
            try:
                helper = self.assistant()
                if helper is not None:
                    api.assist_features(self.store, helper, image_id)
            except UserError as e:  # a round-0 model (no assist), or an image gone since: nothing to warm
                log.debug("no assist features for image %s: %s", image_id, e)
