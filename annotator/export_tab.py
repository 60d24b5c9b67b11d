"""The Export tab: the dataset written as files to download (annotator.store_view.ExportFolder, db exports)."""

from __future__ import annotations

import gradio as gr

from annotator import store_view
from annotator.access import Roles
from annotator.widgets import markdown, refused
from db.errors import UserError
from db.formats import FORMATS
from db.store import Store


def export_tab(store: Store, exports: store_view.ExportFolder, roles: Roles):
    """The Export tab; returns (its tools, the note shown instead to a role that may not export)."""
    not_yours = markdown("Exporting the dataset needs the admin role.", visible=False, elem_id="export-not-yours")
    with gr.Column(elem_id="export-tools") as tools:
        markdown("COCO and YOLO read an image without annotations as a *negative* example (nothing to find in "
                 "it), so by default only images whose labels are **done** are written (a done image with no objects is "
                 "a true negative). Images still new, proposed or in review would turn their unlabeled objects "
                 "into false negatives for whoever trains on the file.")
        with gr.Row():
            with_images = gr.Checkbox(label="Zip with images", elem_id="export-with-images")
            include_props = gr.Checkbox(label="Include unreviewed proposals (with score) and their images",
                                        elem_id="export-proposals")
            all_images = gr.Checkbox(label="Every image, also those not labeled yet", elem_id="export-all-images")
            fmt = gr.Radio([(f.label, f.name) for f in FORMATS.values()], value="coco", label="Format",
                           elem_id="export-format")
        go = gr.Button("Prepare export", elem_id="export-button")
        out = gr.File(label="Download", elem_id="export-file")
    # one export at a time: preparing one deletes the previous folder, after Gradio copied its file
    def prepare(wi, ip, ai, f, request: gr.Request):
        no = refused(roles, request, "export")
        if no:
            raise gr.Error(no)
        try:
            path = exports.prepare(store, wi, ip, ai, f or "coco")
        except UserError as e:
            raise gr.Error(str(e)) from None
        for line in exports.notes:
            gr.Info(line)
        return path

    go.click(prepare, inputs=[with_images, include_props, all_images, fmt], outputs=out, api_name="export",
             concurrency_limit=1)
    return tools, not_yours
