"""The model view's data: the training job's progress, version table, AP and correction plots, who did what.

Plain functions over the store and model.api (no gradio), called by the UI and the tests. They return
Markdown: any user-given text in it (job and error messages) goes through annotator.text.escape."""

from __future__ import annotations

import datetime as dt
import html
import math

import pandas as pd

from annotator.messages import whole_text
from annotator.text import escape
from db import annotations, jobs, settings
from db.errors import UserError
from db.schema import utcnow
from db.stats import ReviewStats, labeler_stats
from db.store import Store
from model import api

VERSION_HEADERS = ["version", "active", "size", "parent", "images", "bbox AP", "segm AP", "keypoints AP",
                   "parent segm AP", "promoted", "created", "note"]


def _ap(m, k):
    v = (m or {}).get(k)
    return "" if v is None else round(v, 3)


def version_rows(store: Store) -> list[list]:
    return [[v.id, "*" if v.is_active else "", v.size, v.parent_id or "", v.images_used, _ap(v.metrics, "bbox"),
             _ap(v.metrics, "segm"), _ap(v.metrics, "keypoints"), _ap(v.parent_metrics, "segm"),
             "yes" if v.promoted else "no", v.created_at.isoformat(timespec="seconds"), v.note]
            for v in api.list_versions(store)]


def version_label(version_id: int, width: int = 1) -> str:
    """A version on a plot's axis: a name ("v3"), so the axis shows versions, never "2.5"; zero-padded to
    ``width`` digits so that the names sort as the numbers do ("v02" before "v10")."""
    return f"v{version_id:0{width}d}"


def _width(ids) -> int:
    return len(str(max(ids, default=1)))


def ap_frame(store: Store) -> pd.DataFrame:
    versions = api.list_versions(store)
    w = _width(v.id for v in versions)
    rows = [(version_label(v.id, w), k, v.metrics[k]) for v in versions if v.metrics
            for k in ("bbox", "segm", "keypoints") if v.metrics.get(k) is not None]
    return pd.DataFrame(rows, columns=["version", "metric", "AP"])


REVIEW_HEADERS = ["version", "images saved", "proposals reviewed", "accepted unchanged", "mean IoU proposal→saved",
                  "keypoints moved / image", "rejected / image", "drawn / image", "assisted / image",
                  "seconds / image"]
NO_MODEL = "no model"


def _review_labels(stats: list[ReviewStats]) -> list[str]:
    w = _width(r.version_id for r in stats if r.version_id is not None)
    return [NO_MODEL if r.version_id is None else version_label(r.version_id, w) for r in stats]


def _num(v: float | None, digits: int = 2):
    return "" if v is None else round(v, digits)


def review_rows(stats: list[ReviewStats]) -> list[list]:
    """The review measures per model version (``db.stats.review_stats``; docs/loop.md says how to read them)."""
    return [[label, r.images, r.proposals,
             _percent(r.share_unchanged), _num(r.mean_iou, 3),
             _num(r.per_image(r.keypoints_moved)), _num(r.per_image(r.rejected)), _num(r.per_image(r.drawn)),
             _num(r.per_image(r.assisted)), _num(r.per_image(r.seconds), 1)]
            for label, r in zip(_review_labels(stats), stats)]


LABELER_HEADERS = ["day (UTC)", "labeler", "images saved", "seconds / image", "saves judged",
                   "sent back (of judged saves)", "proposals reviewed", "accepted unchanged (of proposals)"]
LABELER_DAYS = 30  # days the Model tab shows (app.py stats --by-user shows any)


def labeler_rows(store: Store, days: int = LABELER_DAYS, today: dt.date | None = None) -> list[list]:
    """Who did what (``db.stats.labeler_stats``): one row per labeler and day (UTC) of the last ``days`` days
    up to ``today``, newest first."""
    today = today or utcnow().date()
    return [[d.day.isoformat(), d.user, d.images_saved, _num(d.seconds_per_image, 1), d.judged,
             _percent(d.sent_back_share), d.proposals, _percent(d.accepted_unchanged_share)]
            for d in labeler_stats(store, since=today - dt.timedelta(days=days - 1))]


def _percent(share: float | None) -> str:
    return "" if share is None else f"{100 * share:.0f}%"


def corrections_frame(stats: list[ReviewStats]) -> pd.DataFrame:
    rows = []
    for label, r in zip(_review_labels(stats), stats):
        if r.share_unchanged is not None:
            rows.append((label, "share accepted unchanged", r.share_unchanged))
        if r.mean_iou is not None:
            rows.append((label, "mean IoU proposal vs saved", r.mean_iou))
    return pd.DataFrame(rows, columns=["version", "measure", "value"])


def seconds_frame(stats: list[ReviewStats]) -> pd.DataFrame:
    return pd.DataFrame([(label, r.per_image(r.seconds)) for label, r in zip(_review_labels(stats), stats)
                         if r.images], columns=["version", "seconds per image"])


def seconds_axis(frame: pd.DataFrame) -> list[float]:
    """The seconds plot's y axis: from 0 to a round number above the slowest version, so that one version (or
    several alike) shows as a point inside the plot with readable ticks, not on a collapsed axis of raw floats."""
    top = float(frame["seconds per image"].max()) if len(frame) else 0.0
    if not math.isfinite(top) or top <= 0:
        return [0, 10]
    step = 10 ** math.floor(math.log10(top * 1.2))
    return [0, math.ceil(top * 1.2 / step) * step]


def corrections_note(frame: pd.DataFrame) -> str:
    """Why the review plots are empty, when they are; else how to read them."""
    if len(frame):
        return ("Each save in the Label tab counts for the version whose proposals were on the image (*no "
                "model*: none were). A version that paid off has more proposals accepted unchanged, a higher "
                "IoU, fewer instances drawn and fewer seconds per image than the one before it; see "
                "docs/loop.md.")
    return ("*How much labelers changed proposals* fills in once images with **model proposals** have been "
            "reviewed and saved in the Label tab: it compares each proposal with what was saved. Imported "
            "labels and saves made before this release do not count.")


def job_panel(store: Store, job_id: int | None = None) -> dict:
    """A training job as the UI shows it: ``job_id`` (the one this page started), else the latest; a failed one
    with the last lines of its log (``log_tail``); another job running meanwhile (from the command line or
    another page) is named under it."""
    other = jobs.running(store, "train")  # (this also fails jobs whose process is gone, before reading)
    j = jobs.get(store, job_id) if job_id is not None else None
    j = j or jobs.latest(store, "train")
    empty = pd.DataFrame([], columns=["iteration", "loss"])
    if j is None:
        return {"markdown": "No fine-tune has run yet.", "percent": 0, "curve": empty, "state": None}
    d = j.detail or {}
    text = f"**Job {j.id}: {j.state}** — {escape(j.message)}"  # the message holds the ETA while training
    if d.get("losses"):
        text += " · " + ", ".join(f"{k.replace('loss_', '')} {v:.3f}" for k, v in d["losses"].items())
    if j.state == "done" and j.result_version_id is not None:
        text += "\n\n" + version_verdict(store, j.result_version_id)
    if j.state == "failed":
        text += log_tail(store, j.id)
    if other is not None and other.id != j.id:
        text += (f"\n\nAnother fine-tune is running: job {other.id} ({escape(other.message)}), started from the "
                 "command line or another page.")
    curve = pd.DataFrame(d.get("curve", []), columns=["iteration", "loss"]) if d.get("curve") else empty
    return {"markdown": text, "percent": round(100 * (j.progress or 0), 1), "curve": curve, "state": j.state}


def log_tail(store: Store, job_id: int) -> str:
    """The last lines of a job's log (model.api.job_log_tail), HTML-escaped in a <pre> block for under the
    job's message; "" when it left no log (a job run from the command line)."""
    lines = api.job_log_tail(store, job_id)
    if not lines:
        return ""
    return (f"\n\nThe last lines of its log (jobs/job-{job_id}.log in the store's folder):\n\n"
            "<pre>" + html.escape("\n".join(lines), quote=False) + "</pre>")


def progress_html(percent: float) -> str:
    """A progress bar (not a control anyone could drag) with its number."""
    p = min(max(float(percent or 0), 0.0), 100.0)
    return f'<progress value="{p:.1f}" max="100" style="width:70%"></progress> {p:.1f}%'



def version_verdict(store: Store, version_id: int) -> str:
    """'version 4: segm AP 0.41 (active before: 0.37) — promoted', as the fine-tune's outcome."""
    v = next((v for v in api.list_versions(store) if v.id == version_id), None)
    if v is None:
        return ""
    if not v.promoted and not api.measured(v.metrics):
        return (f"Version {v.id} was **not promoted: there are no held-out labels to compare it with the active "
                f"version on**. {heldout_advice(store, v.id, v.is_active)}")
    parts = []
    for k in ("bbox", "segm", "keypoints"):
        new, old = (v.metrics or {}).get(k), (v.parent_metrics or {}).get(k)
        if new is not None:
            parts.append(f"{k} AP {new:.3f}" + (f" (active before: {old:.3f})" if old is not None else ""))
    why = (v.metrics or {}).get("promotion")
    verdict = ("promoted to active" if v.promoted else "not promoted: the active model is at least as good"
               if not why else "not promoted, not better beyond the noise")
    if why:
        verdict += f" ({escape(why)})"
    return (f"Version {v.id} on the held-out images: " + ", ".join(parts or ["no held-out labels"])
            + f" — **{verdict}**; {api.quality_verdict(v.metrics)}")


def heldout_advice(store: Store, version_id: int, active: bool = False) -> str:
    """What to do about a fine-tune that had no held-out labels to be judged on (a small store's first ones):
    label held-out images, named from the store (db.annotations.heldout_split), or add images until one is
    held out; or make the version active by hand (unless ``active``: it is already)."""
    split = annotations.heldout_split(store)
    if split.labeled:
        todo = (f"{split.labeled} held-out image(s) have labels now: fine-tune again, and the new version is "
                "compared with the active one on them and promoted when it is better.")
    elif split.to_label:
        names = ", ".join(f"image **{im.id}** ({escape(im.file_name)})" for im in split.to_label)
        todo = ("One image in five is held out for this comparison and never trained on; none of them has labels "
                f"yet. Label and save at least one of {names} (type its id under *Image id* in the Label tab and "
                "click *Open*), then fine-tune again: the new version is compared with the active one and promoted "
                "when it is better.")
    else:
        todo = (f"None of the store's {split.images} image(s) is held out to compare versions on (one in five is, "
                f"chosen by its id): import at least {split.next_id - split.last_id} more image(s), so that image "
                f"**{split.next_id}** exists and is held out; label and save it, then fine-tune again.")
    if active:
        return todo + f" Version {version_id} has been made active since."
    return (todo + f" Or use version {version_id} now: type **{version_id}** under *Version* below and click "
            "**Make active**.")


def start(store: Store, epochs, minutes, size, options: api.ModelOptions | None = None) -> str:
    return start_job(store, epochs, minutes, size, options)[0]


def start_job(store: Store, epochs, minutes, size,
              options: api.ModelOptions | None = None) -> tuple[str, int | None]:
    """Start a fine-tune: (what to show, its job id, or None when it was refused)."""
    options = options or api.ModelOptions()
    problem = api.training_data_problem(store) if jobs.running(store, "train") is None else None
    if problem:  # refused here, not by a job that fails seconds later (a running job is named below)
        return escape(problem), None
    try:
        opts = api.TrainOptions(epochs=_whole(epochs), max_minutes=float(minutes) if minutes else None,
                                size=size or None, device=options.device, weights=options.weights)
        job_id = api.start_training_process(store, opts)
    except UserError as e:
        return escape(e), None
    return f"**Job {job_id}: queued** — starting the training process", job_id


def _whole(value) -> int | None:
    """A number field's value as a whole number; blank or 0 is None (the minutes decide)."""
    try:
        n = whole_text(value, "epochs")
    except UserError:
        raise UserError(f"epochs {value!r}: give a whole number, or 0 to train for the minutes given") from None
    return n or None


def cancel_latest(store: Store) -> str:
    j = jobs.running(store, "train")
    if j is None:
        return "No fine-tune is running."
    api.cancel(store, j.id)
    return f"**Job {j.id}**: cancel requested; it stops at the next iteration and keeps the active model."


def activate_version(store: Store, version) -> str:
    if version is None:
        return "Enter a version number."
    try:
        mv = api.activate(store, int(version))
    except UserError as e:
        return escape(e)
    return f"version {mv.id} is now the active model"


def proposals_line(store: Store, follower_error: str = "") -> str:
    """How far the images not done are in getting the active version's proposals (annotator.follow, or the
    proposal workers), and the auto fine-tune setting."""
    v = api.active_version(store)
    every = settings.fine_tune_every(store)
    auto = (f"A fine-tune starts by itself after every {every} newly saved images." if every
            else "Fine-tunes start only when asked (set *after every N saved images* to let the loop run itself).")
    if v is None:
        return "No active model yet: proposals start once one is fine-tuned. " + auto
    done, total = annotations.proposal_progress(store, v.id)
    workers = settings.workers_alive(store)
    who = f"by {len(workers)} proposal worker(s)" if workers else "in the app, between the labelers' own requests"
    line = (f"Proposals from the active version {v.id}: **{done} of {total}** images not done"
            + (f" ({100 * done / total:.0f} %); the rest are proposed again {who}, most needed first, skipping "
               "images open in a page." if done < total else " — all up to date.") + " " + auto)
    if follower_error:
        line += f"\n\n{escape(follower_error)}"
    return line


def set_auto_fine_tune(store: Store, n) -> str:
    try:
        n = settings.set_fine_tune_every(store, n)
    except UserError as e:
        return escape(e)
    return f"A fine-tune now starts after every {n} newly saved images." if n else "Automatic fine-tunes are off."
