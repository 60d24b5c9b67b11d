"""Proposals for the next images, computed in a background thread while the person works, so opening an
image shows its proposals at once. Uses the active model through model.api; one image at a time."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Iterable

from db import annotations
from db.errors import UserError
from db.store import Store
from model import api

log = logging.getLogger(__name__)


class BackgroundProposer:
    def __init__(self, store: Store, options: api.ModelOptions | None = None, min_score: float = 0.3):
        self.store, self.min_score = store, min_score
        self.options = options or api.ModelOptions()
        self._queue: "queue.Queue[int]" = queue.Queue()
        self._pending: set[int] = set()
        self._lock = threading.Lock()  # one model run at a time, shared with "propose again"
        self._predictor = None
        self._assistant = None
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="maskloop-proposals", daemon=True)
        self._thread.start()

    def predictor(self):
        """The active model's predictor, reloaded when another version becomes active. None: no model."""
        self._predictor = api.active_predictor(self.store, self.options, self._predictor)
        return self._predictor

    def want(self, image_ids: Iterable[int]) -> None:
        """Queue these images for proposals if they have none yet (status new)."""
        ids = list(image_ids)
        new = {i for i, im in annotations.images(self.store, ids).items() if im.status == "new"}
        for i in ids:
            if i in new and i not in self._pending:
                self._pending.add(i)
                self._queue.put(i)

    def assist_box(self, image_id: int, box_xyxy, category_id: int | None = None) -> dict:
        """The active model's instance for a box a labeler drew (model.api.assist_box); writes nothing. Shares
        the one-model-run-at-a-time lock and the model with the background proposals."""
        with self._lock:
            self._assistant = api.assistant(self.store, self.options, self._assistant)
            return api.assist_box(self.store, self._assistant, image_id, box_xyxy, category_id)

    def propose_now(self, image_id: int) -> dict:
        with self._lock:
            p = self.predictor()
            if p is None:
                raise UserError("no model yet: fine-tune one in the Model tab first")
            return api.propose_images(self.store, [image_id], self.options, self.min_score, predictor=p)

    def _run(self) -> None:
        while True:
            image_id = self._queue.get()
            try:
                with self._lock:
                    im = annotations.images(self.store, [image_id]).get(image_id)
                    still_new = im is not None and im.status == "new"
                    p = self.predictor() if still_new else None
                    if p is not None:
                        api.propose_images(self.store, [image_id], self.options, self.min_score, predictor=p)
            except Exception as e:  # noqa: BLE001 - a background failure is shown in the UI, never fatal
                self.last_error = f"background proposals for image {image_id} failed: {e}"
                log.warning(self.last_error)
            finally:
                self._pending.discard(image_id)
