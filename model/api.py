"""The model as the rest of the project reaches it: annotator/ imports no other model module, and app.py none
either. Round 0, proposals (batched, and as a worker process), box and point assist, training jobs (in a
separate process, or this one under torchrun), model versions, the demo store. Job state lives in the
database, not in this process; a training job's row holds every setting its worker needs."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from db import jobs, settings
from db.errors import UserError
from db.store import Store
from db import annotations
from db.instances import Instances
from db.schema import ModelVersion
from model.assist import ROUND0_REFUSED, Assistant
from model.build import WeightsUnavailable
from model.demo import fill_demo
from model.evaluate import summary_score
from model.options import ModelOptions
from model.distributed import from_env
from model.data import UnusableImage, read_pixels, store_category_map
from model.predict import Predictor, active_version, ensure_round0, images_to_propose, propose
from model.train import (DEFAULT_EPOCHS, Cancelled, Progress, TrainOptions, TrainResult, activate, fine_tune, list_versions,
                         training_data_problem)

__all__ = ["DEFAULT_EPOCHS", "ModelOptions", "TrainOptions", "TrainResult", "Progress", "Predictor", "Instances", "quality_verdict",
           "WeightsUnavailable", "ensure_round0", "train_job", "start_training_process", "cancel", "activate",
           "list_versions", "training_data_problem", "active_version", "active_predictor", "predictor", "propose_images",
           "images_to_propose", "fill_demo", "Assistant", "assistant", "assist_box", "assist_point",
           "assist_features", "assist_features_ready", "propose_worker", "skipped_lines", "job_log", "job_log_tail",
           "measured"]


def train_job(store: Store, opts: TrainOptions, job_id: int | None = None,
              echo: Callable[[Progress], None] | None = None) -> TrainResult | None:
    """Run a fine-tune as a job: progress (iteration, loss terms, ETA) goes to the job row about once a
    second, a cancel request stops it at the next iteration, and any failure marks the job failed while the
    store and the active model stay as they were. Returns None when cancelled."""
    if job_id is None:
        job_id = jobs.create(store, "train", dataclasses.asdict(opts))
    jobs.set_state(store, job_id, "running", "starting")
    last = [0.0]
    curve: list[list[float]] = []

    def on_progress(p: Progress) -> bool:
        if echo:
            echo(p)
        if p.losses:
            curve.append([p.iteration, round(sum(p.losses.values()), 4)])
            if len(curve) > 300:
                del curve[1:-1:2]  # keep the plot's points bounded: thin out the older half
        now = time.monotonic()
        if now - last[0] < 1.0 and p.iteration < p.total and p.phase == "training":
            return False
        last[0] = now
        msg = ("evaluating on the held-out images" if p.phase == "evaluating" else
               f"iteration {p.iteration}/{p.total}, loss {sum(p.losses.values()):.3f}, ETA {_duration(p.eta)}"
               if p.phase == "training" else p.phase)  # reading the labels, building the model
        return jobs.report(store, job_id, _fraction(p, opts.max_minutes), msg,
                           {"iteration": p.iteration, "total": p.total, "losses": p.losses, "eta": p.eta,
                            "elapsed": p.elapsed, "phase": p.phase, "curve": curve})

    try:
        with jobs.keep_alive(store, job_id):
            result = fine_tune(store, opts, on_progress)
    except Cancelled:
        jobs.set_state(store, job_id, "cancelled", "cancelled; the active model is unchanged")
        return None
    except UserError as e:
        jobs.set_state(store, job_id, "failed", str(e))
        raise
    except BaseException as e:
        jobs.set_state(store, job_id, "failed", f"{type(e).__name__}: {e}")
        raise
    verdict = ("promoted to active" if result.promoted else "not promoted (not better than the active model on the "
               "held-out images: see the version's reason)" if measured(result.metrics) else "not promoted: no "
               "held-out labels to compare it with the active version on")
    left_out = (f"; {len(result.skipped)} image(s) the model cannot use were left out (the Dataset tab lists them)"
                if result.skipped else "")
    jobs.set_state(store, job_id, "done", f"version {result.version_id} {verdict}{left_out}", progress=1.0,
                   result_version_id=result.version_id)
    return result


def train_as_other_rank(store: Store, opts: TrainOptions) -> bool | None:
    """Under torchrun, on a rank other than 0: train alongside rank 0 (which registers round 0, runs the job and
    reports) and answer False when the job was cancelled, True when it ended; None in any other process (no
    torchrun, or its rank 0): the caller runs the job itself (``train_job``)."""
    dist = from_env()
    if dist is None or dist.main:
        return None
    try:
        fine_tune(store, opts)
    except Cancelled:
        return False
    return True


def measured(metrics: dict | None) -> bool:
    """Whether a version's metrics hold an AP, so that it could be compared with another version; False when
    the store had no held-out labels (then a fine-tune is never promoted by itself: ``model.train``)."""
    return summary_score(metrics) is not None


def quality_verdict(metrics: dict | None) -> str:
    """Held-out mask AP in plain words (box AP where there are no masks)."""
    ap = (metrics or {}).get("segm")
    ap = ap if ap is not None else (metrics or {}).get("bbox")
    if ap is None:
        return "no verdict: there are no held-out labels to measure it on (label some held-out images)"
    if ap >= 0.3:
        return f"good enough to propose (held-out AP {ap:.2f}): expect small corrections"
    if ap >= 0.1:
        return f"usable, with many corrections (held-out AP {ap:.2f}): label more images and fine-tune again"
    return f"keep labeling (held-out AP {ap:.2f}): too weak to propose well yet"


TRAINING_SHARE = 0.9  # of the progress bar: the rest is the evaluation on the held-out images


def _fraction(p: Progress, max_minutes: float | None) -> float:
    """How far a fine-tune is: iterations or the time limit, whichever is nearer its end, then evaluation
    (so a run stopped by its time limit does not sit at 28 % and jump to 100 %)."""
    if p.phase == "evaluating":
        return TRAINING_SHARE
    done = p.iteration / max(1, p.total)
    if max_minutes:
        done = max(done, p.elapsed / (60.0 * max_minutes))
    return TRAINING_SHARE * min(done, 1.0)


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def job_log(store: Store, job_id: int) -> Path:
    """The file a training process started from here writes its output to."""
    return Path(store.settings.store_dir).resolve() / "jobs" / f"job-{job_id}.log"


LOG_TAIL_LINES = 15
LOG_TAIL_BYTES = 8192


def job_log_tail(store: Store, job_id: int, lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES) -> list[str]:
    """The last ``lines`` lines of the job's log (``job_log``), read from at most its last ``max_bytes``
    bytes (a line cut by that is left out); [] when there is no log (a job run from the command line)."""
    try:
        with open(job_log(store, job_id), "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]
    return [line for line in text if line.strip()][-lines:]


def start_training_process(store: Store, opts: TrainOptions) -> int:
    """Start a fine-tune in a separate process (the UI stays responsive); returns the job id. The process opens
    this store by absolute path (folder and SQLite file), whatever the working folder, and writes its output to
    ``job_log``."""
    job_id = jobs.create(store, "train", dataclasses.asdict(opts))  # refused while another one runs
    settings = store.settings.absolute()
    args = [sys.executable, "-m", "model.worker", "--store", str(settings.store_dir), "--job", str(job_id)]
    if settings.db_url:
        args += ["--db", settings.db_url]
    log = job_log(store, job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
                                start_new_session=True)
    # reaped when it ends, so a long-running UI does not collect a zombie process per fine-tune
    threading.Thread(target=proc.wait, name=f"reap-job-{job_id}", daemon=True).start()
    jobs.set_state(store, job_id, "queued", "starting the training process (loading torch)", pid=proc.pid)
    return job_id


def cancel(store: Store, job_id: int) -> None:
    jobs.request_cancel(store, job_id)


def assistant(store: Store, options: ModelOptions, current: Assistant | None = None,
              predictor: Callable[[], Predictor | None] | None = None) -> Assistant | None:
    """A box-assist for the active model version, reusing ``current`` (and its cached image features) while
    that version stays active. ``predictor``: gives the caller's own predictor of the active version (a
    proposer's, ``active_predictor``), whose network the assist then shares instead of loading a second copy.
    None when there is no model yet; UserError for the round-0 COCO networks, refused before they are
    loaded."""
    v = active_version(store)
    if v is not None and v.checkpoint == "coco":
        raise UserError(ROUND0_REFUSED)
    p = (predictor() if predictor is not None
         else active_predictor(store, options, current.predictor if current is not None else None))
    if p is None:
        return None
    return current if current is not None and current.predictor is p else Assistant(p)


def assist_box(store: Store, helper: Assistant | None, image_id: int, box_xyxy: Sequence[float],
               category_id: int | None = None) -> dict[str, Any]:
    """What the model sees in this box of an image (image pixels, x0 y0 x1 y1; the class from the box head
    unless ``category_id`` is given): {"category_id", "score", "bbox" (xywh, tight around the mask),
    "segmentation" (COCO RLE, counts a str), "keypoints" (flat x, y, v, or None), "model_version_id" (the
    version that answered)}. Writes nothing."""
    if not isinstance(box_xyxy, (list, tuple)) or len(box_xyxy) != 4:
        _prompted(store, helper, image_id, category_id)  # (a missing model or image is said first)
        raise UserError("the box must be [x0, y0, x1, y1] in image pixels")
    return _answer(_ask(store, helper, image_id, category_id,
                        lambda key, load, size_hw: helper.box(key, load, size_hw, box_xyxy, category_id)),
                   image_id, helper.predictor.version.id)


def assist_point(store: Store, helper: Assistant | None, image_id: int, x: float, y: float,
                 category_id: int | None = None) -> dict[str, Any]:
    """The model's best detection covering the point (x, y) of an image (image pixels), however low its
    score (only of ``category_id`` when given), as ``assist_box`` answers: {"category_id", "score", "bbox",
    "segmentation", "keypoints", "model_version_id"}. UserError when the model sees nothing there. Writes nothing."""
    return _answer(_ask(store, helper, image_id, category_id,
                        lambda key, load, size_hw: helper.point(key, load, size_hw, x, y, category_id)),
                   image_id, helper.predictor.version.id)


def assist_features(store: Store, helper: Assistant, image_id: int) -> None:
    """Compute (or, when cached, mark as just used) the features assist prompts of this image will use."""
    _ask(store, helper, image_id, None, lambda key, load, _: helper.features(key, load))


def _ask(store: Store, helper: Assistant | None, image_id: int, category_id: int | None,
         question: Callable[[tuple, Callable[[], np.ndarray], tuple[int, int]], Any]) -> Any:
    """``question(key, load, size_hw)`` about a checked image (``_prompted``). An image the model cannot look
    at, or whose file cannot be read, gets the reason recorded on it (db.annotations.record_problems) and a
    UserError naming it; a problem recorded before is cleared once the model has looked at it."""
    key, load, size_hw, had_problem = _prompted(store, helper, image_id, category_id)
    try:
        answer = question(key, load, size_hw)
    except UnusableImage as e:
        annotations.record_problems(store, {image_id: str(e)})
        raise UserError(f"the model cannot use image {image_id}: {e}") from None
    if had_problem:
        annotations.clear_problems(store, [image_id])
    return answer


def assist_features_ready(store: Store, helper: Assistant | None, image_id: int) -> bool:
    """Whether the features assist prompts of this image will use are cached."""
    if helper is None:
        return False
    im = annotations.images(store, [image_id]).get(image_id)
    return im is not None and helper.has_features(_assist_key(helper, image_id, im.media_path))


def _assist_key(helper: Assistant, image_id: int, media_path: str) -> tuple:
    return helper.predictor.version.id, image_id, media_path


def _prompted(store: Store, helper: Assistant | None, image_id: int, category_id: int | None = None
              ) -> tuple[tuple, Callable[[], np.ndarray], tuple[int, int], bool]:
    """An assist prompt's image, checked: (cache key, pixel loader (UnusableImage when the file cannot be
    read), (height, width), whether a problem is recorded on it)."""
    if helper is None:
        raise UserError("no model yet: fine-tune one first (Model tab, or app.py train --size tiny)")
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise UserError(f"image id {image_id!r} is not an integer")
    if category_id is not None and (not isinstance(category_id, int) or isinstance(category_id, bool)):
        raise UserError(f"category id {category_id!r} is not an integer")
    im = annotations.images(store, [image_id]).get(image_id)
    if im is None:
        raise UserError(f"no image with id {image_id}")
    return (_assist_key(helper, image_id, im.media_path),
            lambda: read_pixels(store.media_file(im.media_path), im.height, im.width), (im.height, im.width),
            bool(im.problem))


def _answer(inst: Instances, image_id: int, version_id: int | None) -> dict[str, Any]:
    d = inst.coco(0, image_id, with_score=True)
    return {"category_id": d["category_id"], "score": d["score"], "bbox": d["bbox"],
            "segmentation": d["segmentation"], "keypoints": d.get("keypoints"), "model_version_id": version_id}


def predictor(store: Store, options: ModelOptions, batch_size: int = 4) -> Predictor:
    """The active model version's predictor (UserError when there is no model yet)."""
    return Predictor.for_version(store, options, batch_size=batch_size)


def active_predictor(store: Store, options: ModelOptions, current: Predictor | None = None) -> Predictor | None:
    """A predictor for the active model version, reusing ``current`` while that version stays active.
    None when there is no model yet."""
    v: ModelVersion | None = active_version(store)
    if v is None:
        return None
    if (current is not None and current.version is not None and current.version.id == v.id
            and current.store_map == store_category_map(store)):  # (categories renamed or deleted: map again)
        return current
    return Predictor.for_version(store, options, v)


def propose_images(store: Store, image_ids: list[int], options: ModelOptions, min_score: float = 0.3,
                   progress: Callable[[int, int], None] | None = None,
                   predictor: Predictor | None = None) -> dict[str, Any]:
    """Proposals for these images from the active model (or ``predictor``), replacing their unreviewed ones;
    returns {"images": n, "proposals": m, "skipped": {image id: reason}} (model.predict.propose: an image the
    model cannot use is skipped, its reason recorded on it)."""
    predictor = predictor or Predictor.for_version(store, options)
    return propose(store, image_ids, predictor, min_score=min_score, progress=progress)


def skipped_lines(store: Store, skipped: dict[int, str]) -> list[str]:
    """One line per skipped image, naming it: "skipped: image 7 (thin.png): reason"."""
    names = {i: im.file_name for i, im in annotations.images(store, list(skipped)).items()}
    return [f"skipped: image {i}" + (f" ({names[i]})" if i in names else "") + f": {why}"
            for i, why in skipped.items()]


def propose_worker(store: Store, options: ModelOptions, worker: str, *, claim: int = 16, claim_seconds: float = 600.0,
                   min_score: float = 0.3, poll_seconds: float = 5.0, once: bool = False,
                   stop: Callable[[], bool] = lambda: False,
                   echo: Callable[[list[int], dict[str, Any]], None] | None = None) -> dict[str, int]:
    """One proposal worker (``app.py propose --worker``): claim images through the database
    (db.annotations.claim_images, in the labeling queue's order), propose on them with the active model, write
    them (which ends the claims), and again; a new active version is picked up between claims, and then every image not done is proposed
    on again. Any number of workers, processes or machines, share a store without proposing on an image
    twice; a worker that dies holds its images until its claims expire (``claim_seconds``). ``once``: stop
    when nothing is left to claim, else wait ``poll_seconds`` and look again, until ``stop()``. An image the
    model cannot use is skipped with its reason recorded on it (``propose``) and not claimed again for this
    version; it never stops the worker (``echo`` gets each batch's reasons). Returns the counts {"images",
    "proposals", "skipped"}."""
    total = {"images": 0, "proposals": 0, "skipped": 0}
    predictor = None
    try:
        while not stop():
            settings.worker_beat(store, worker)  # the app leaves the proposing to the workers (annotator.follow)
            predictor = active_predictor(store, options, predictor)
            ids = (annotations.claim_images(store, worker, predictor.version.id, claim, claim_seconds,
                                            order=annotations.queue(store))
                   if predictor is not None else [])
            if not ids:
                if once:
                    break
                time.sleep(poll_seconds)
                continue
            try:
                r = propose(store, ids, predictor, min_score=min_score)
            except BaseException:
                annotations.release_claims(store, worker, ids)  # another worker may take them at once
                raise
            total["images"] += r["images"]
            total["proposals"] += r["proposals"]
            total["skipped"] += len(r["skipped"])
            if echo:
                echo(ids, r)
    finally:
        settings.worker_gone(store, worker)
    return total
