"""The Gradio application. Callbacks are thin: they call plain functions in annotator/ modules."""

from __future__ import annotations

import gradio as gr

from annotator import store_view
from db.store import Store


def dataset_tab(store: Store) -> None:
    with gr.Row():
        by_status = gr.Dataframe(headers=["status", "images"], label="Images by status", interactive=False,
                                 elem_id="counts-status")
        by_cat = gr.Dataframe(headers=["category", "accepted", "proposed", "rejected"],
                              label="Annotations by category", interactive=False, elem_id="counts-category")
    gallery = gr.Gallery(label="Images (masks drawn)", columns=6, height=420, elem_id="store-gallery")
    refresh = gr.Button("Refresh", elem_id="refresh-store")
    with gr.Row():
        with gr.Column():
            files = gr.File(label="Images or zip archives", file_count="multiple", type="filepath",
                            elem_id="upload-images")
            upload = gr.Button("Import images", elem_id="import-images")
        with gr.Column():
            coco_json = gr.File(label="COCO JSON", file_types=[".json"], type="filepath", elem_id="upload-coco")
            coco_images = gr.File(label="Its images (files or zip)", file_count="multiple", type="filepath")
            as_props = gr.Checkbox(label="Import as proposals to review")
            import_coco = gr.Button("Import COCO", elem_id="import-coco")
    report = gr.Textbox(label="Import report", lines=6, elem_id="import-report")

    def refresh_all():
        s, c = store_view.counts_tables(store)
        return s, c, store_view.gallery(store)

    outputs = [by_status, by_cat, gallery]
    refresh.click(refresh_all, outputs=outputs)
    upload.click(lambda p: store_view.upload_images(store, p or []), inputs=files, outputs=report).then(
        refresh_all, outputs=outputs)
    import_coco.click(lambda j, im, a: store_view.upload_coco(store, j, im or [], a),
                      inputs=[coco_json, coco_images, as_props], outputs=report).then(refresh_all, outputs=outputs)
    return refresh_all, outputs


def export_tab(store: Store) -> None:
    with gr.Row():
        with_images = gr.Checkbox(label="Zip with images")
        include_props = gr.Checkbox(label="Include unreviewed proposals (with score)")
    go = gr.Button("Prepare COCO export", elem_id="export-button")
    out = gr.File(label="Download", elem_id="export-file")
    go.click(lambda wi, ip: store_view.export_file(store, wi, ip), inputs=[with_images, include_props], outputs=out)


def build_app(store: Store) -> gr.Blocks:
    with gr.Blocks(title="maskloop") as demo:
        gr.Markdown("# maskloop")
        with gr.Tab("Dataset"):
            refresh_all, outputs = dataset_tab(store)
        with gr.Tab("Export"):
            export_tab(store)
        demo.load(refresh_all, outputs=outputs)
    return demo


def parse_auth(pairs: list[str]) -> list[tuple[str, str]] | None:
    out = []
    for p in pairs:
        user, sep, pw = p.partition(":")
        if not sep or not user or not pw:
            from db.errors import UserError

            raise UserError(f"--auth {p!r}: expected USER:PASSWORD")
        out.append((user, pw))
    return out or None


def launch(store: Store, host: str = "127.0.0.1", port: int = 7860, auth: list[str] | None = None,
           share: bool = False, block: bool = True) -> gr.Blocks:
    demo = build_app(store)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, auth=parse_auth(auth or []), share=share,
                prevent_thread_lock=not block, show_error=True)
    return demo
