"""The Model tab: fine-tune (a job in its own process), its progress, the model versions and their measured
quality, which version is active, and who corrected what (annotator.model_view does the work)."""

from __future__ import annotations

import gradio as gr

from annotator import model_view, text
from annotator.access import Roles
from annotator.follow import Follower
from annotator.messages import whole_text as id_field
from annotator.widgets import markdown, refused
from db import settings
from db.errors import UserError
from db.stats import review_stats
from db.store import Store
from model.api import ModelOptions


def model_tab(store: Store, options: ModelOptions, roles: Roles, follower: Follower | None = None):
    with gr.Row() as train_row:
        minutes = gr.Number(value=5, label="Minutes to train", elem_id="train-minutes", minimum=0)
        epochs = gr.Number(value=0, label="Or stop after epochs (0: train for the minutes)", precision=0,
                           elem_id="train-epochs", minimum=0)
        size = gr.Radio(["tiny", "full"], value=None, label="Size (blank: the active model's)", elem_id="train-size")
        start = gr.Button("Fine-tune", variant="primary", elem_id="btn-finetune")
        cancel = gr.Button("Cancel", variant="stop", elem_id="btn-cancel")
        every = gr.Number(value=settings.fine_tune_every(store), label="Or by itself after every N saved images "
                          "(0: off)", precision=0, elem_id="auto-every", minimum=0)
        every_b = gr.Button("Set", elem_id="btn-auto-every", size="sm")
    job_md = markdown(elem_id="job-status")
    follow_md = markdown(elem_id="proposals-status")
    progress = gr.HTML(model_view.progress_html(0), elem_id="job-progress")
    start_note = markdown(elem_id="start-note")  # a refused start stays in view (the job status is polled)
    loss_plot = gr.LinePlot(x="iteration", y="loss", label="Training loss", elem_id="loss-plot",
                            x_axis_format="d", y_axis_format=".3~g")  # whole iterations, a readable loss
    versions = gr.Dataframe(headers=model_view.VERSION_HEADERS, interactive=False, elem_id="versions-table",
                            label="Model versions (* = active)")
    with gr.Row() as activate_row:
        v_id = gr.Textbox(label="Version", placeholder="a version id from the table", max_lines=1,
                          elem_id="version-id")
        activate_b = gr.Button("Make active", elem_id="btn-activate")
        v_msg = markdown()
    with gr.Row():
        # points, so that a single version shows; versions are names ("v3") on the axis, in order
        ap_plot = gr.ScatterPlot(x="version", y="AP", color="metric", label="Held-out AP per version",
                                 elem_id="ap-plot", sort="x", y_lim=[0, 1])
        fix_plot = gr.ScatterPlot(x="version", y="value", color="measure", sort="x", y_lim=[0, 1],
                                  label="How much labelers changed proposals", elem_id="corrections-plot")
        secs_plot = gr.ScatterPlot(x="version", y="seconds per image", sort="x", y_axis_format=".3~g",
                                   label="Seconds of labeling per image", elem_id="seconds-plot")
    reviews = gr.Dataframe(headers=model_view.REVIEW_HEADERS, interactive=False, elem_id="reviews-table",
                           label="Review measures per model version (from the saves in the Label tab)")
    fix_note = markdown(elem_id="corrections-note")
    who = gr.Dataframe(headers=model_view.LABELER_HEADERS, interactive=False, elem_id="labelers-table",
                       label=f"Who did what: per labeler and day, the last {model_view.LABELER_DAYS} days "
                             "(app.py stats --by-user for any days)")
    timer = gr.Timer(2.0, active=True)
    last_state, mine = gr.State(None), gr.State(None)  # (job state, versions) last seen; the job this page started

    def tables():
        stats = review_stats(store)  # read once for the two plots and the table
        fixes = model_view.corrections_frame(stats)
        secs = model_view.seconds_frame(stats)
        return (model_view.version_rows(store), model_view.ap_frame(store), fixes,
                gr.ScatterPlot(secs, y_lim=model_view.seconds_axis(secs)),
                model_view.review_rows(stats), model_view.corrections_note(fixes), model_view.labeler_rows(store))

    def poll(last, job_id):
        j = model_view.job_panel(store, job_id)
        seen = (j["state"], len(model_view.api.list_versions(store)))
        changed = seen != last and (seen[0] in ("done", "failed", "cancelled") or last is None or seen[1] != last[1])
        refreshed = tables() if changed else (gr.update(),) * len(table_outs)  # a version from anywhere
        return (j["markdown"], model_view.progress_html(j["percent"]), j["curve"], seen,
                model_view.proposals_line(store, follower.last_error if follower else "")) + refreshed

    def start_job(e, m, sz, job_id, request: gr.Request):
        no = refused(roles, request, "train")
        if no:
            return no, job_id
        text, new = model_view.start_job(store, e, m, sz, options)
        return ("" if new is not None else text), new if new is not None else job_id

    table_outs = [versions, ap_plot, fix_plot, secs_plot, reviews, fix_note, who]
    timer.tick(poll, [last_state, mine], [job_md, progress, loss_plot, last_state, follow_md] + table_outs)

    def auto_every(n, request: gr.Request):
        return refused(roles, request, "train") or model_view.set_auto_fine_tune(store, n)

    every_b.click(auto_every, every, start_note)
    start.click(start_job, [epochs, minutes, size, mine], [start_note, mine])
    def cancel_job(request: gr.Request):
        return refused(roles, request, "train") or model_view.cancel_latest(store)

    cancel.click(cancel_job, None, job_md)

    def activate(typed, request: gr.Request):
        no = refused(roles, request, "activate")
        if no:
            return no
        try:
            return model_view.activate_version(store, id_field(typed, "version"))
        except UserError as e:
            return text.escape(str(e))

    activate_b.click(activate, v_id, v_msg).then(tables, None, table_outs)
    return tables, table_outs, timer, (train_row, activate_row)
