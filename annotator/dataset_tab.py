"""The Dataset tab: import images and COCO files, the counts, the gallery, categories, problems and who holds or is
assigned which images (annotator.store_view does the work)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from annotator import model_view, store_view, text
from annotator.access import Roles
from annotator.messages import whole_text as id_field
from annotator.widgets import markdown, refused
from db import categories as cat_db
from db.errors import UserError
from db.store import Store


def dataset_tab(store: Store, roles: Roles):
    with gr.Row():
        by_status = gr.Dataframe(headers=["status", "images"], label="Images by status", interactive=False,
                                 elem_id="counts-status")
        by_cat = gr.Dataframe(headers=["category", "accepted", "proposed", "rejected"],
                              label="Annotations by category", interactive=False, elem_id="counts-category")
    with gr.Row():
        status_plot = gr.BarPlot(x="status", y="images", label="Images by status", elem_id="plot-status")
        cat_plot = gr.BarPlot(x="category", y="count", color="state", label="Annotations by category",
                              elem_id="plot-category")
    with gr.Accordion("Images the model could not use", open=False, elem_id="problems-panel"):
        problems_line = markdown(elem_id="problems-count")
        problems = gr.Dataframe(headers=store_view.PROBLEM_HEADERS, interactive=False, elem_id="problems-table")
    with gr.Accordion("Who holds what", open=False, elem_id="holds-panel"):
        holds = gr.Dataframe(headers=store_view.HOLDS_HEADERS, interactive=False, elem_id="holds-table")
        with gr.Group() as assign_edit:
            with gr.Row():
                a_user = gr.Textbox(label="Assign to (user name)", max_lines=1, elem_id="assign-user")
                a_folder = gr.Textbox(label="Folder", placeholder="e.g. site-a/2026-11", max_lines=1)
                a_cat = gr.Textbox(label="Category (name or id)", max_lines=1)
                a_status = gr.Dropdown(["", "new", "proposed", "in_review", "done"], value="", label="Status")
                a_ids = gr.Textbox(label="Image ids", placeholder="3, 5, 9-12", max_lines=1, elem_id="assign-ids")
            with gr.Row():
                a_go = gr.Button("Assign the images picked", elem_id="btn-assign")
                a_back = gr.Button("Take back (the images picked, or all of the user's)", elem_id="btn-unassign")
        a_msg = markdown(elem_id="assign-message")
    gallery = gr.Gallery(label="Images (masks drawn)", columns=6, height=420, elem_id="store-gallery")
    with gr.Row():
        g_prev = gr.Button("◀ Previous page", elem_id="gallery-prev", scale=1)
        g_label = markdown(elem_id="gallery-page")
        g_next = gr.Button("Next page ▶", elem_id="gallery-next", scale=1)
        refresh = gr.Button("Refresh", elem_id="refresh-store", scale=1)
    g_page, g_ids = gr.State(1), gr.State([])
    with gr.Row() as import_row:
        with gr.Column():
            files = gr.File(label="Images or zip archives", file_count="multiple", type="filepath",
                            elem_id="upload-images")
            upload = gr.Button("Import images", elem_id="import-images")
        with gr.Column():
            coco_json = gr.File(label="COCO JSON", file_types=[".json"], type="filepath", elem_id="upload-coco")
            coco_images = gr.File(label="Its images (files or zip)", file_count="multiple", type="filepath")
            as_props = gr.Checkbox(label="Import as proposals to review")
            needs_review = gr.Checkbox(label="Labels wait for a reviewer (else taken as reviewed)",
                                       elem_id="import-needs-review")
            import_coco = gr.Button("Import COCO", elem_id="import-coco")
    report = gr.Textbox(label="Import report", lines=6, elem_id="import-report")
    with gr.Accordion("Categories", open=False, elem_id="categories-panel"):
        cats_table = gr.Dataframe(headers=["id", "name", "supercategory", "keypoints", "skeleton", "annotations"],
                                  interactive=False, elem_id="categories-table")
        with gr.Group() as cat_edit:
            with gr.Row():
                c_id = gr.Textbox(label="Category id (blank: new)", placeholder="blank: a new category", max_lines=1,
                                  elem_id="category-id")
                c_name = gr.Textbox(label="Name")
                c_super = gr.Textbox(label="Supercategory")
            with gr.Row():
                c_kps = gr.Textbox(label="Keypoint names (comma separated, in order)")
                c_skel = gr.Textbox(label="Skeleton (1-based pairs: 1-2, 2-3)")
            with gr.Row():
                c_save = gr.Button("Add / update category", elem_id="btn-category-save")
                c_move = gr.Textbox(label="Move its annotations to category id", placeholder="blank: none", max_lines=1,
                                    elem_id="category-move")
                c_del_anns = gr.Checkbox(label="or delete its annotations")
                c_delete = gr.Button("Delete category", variant="stop", elem_id="btn-category-delete")
        c_msg = markdown(elem_id="category-message")

    def refresh_counts():
        s, c = store_view.counts_tables(store)
        sdf = pd.DataFrame(s, columns=["status", "images"])
        cdf = pd.DataFrame([(r[0], st, r[k]) for r in c for k, st in ((1, "accepted"), (2, "proposed"), (3, "rejected"))],
                           columns=["category", "state", "count"])
        return ((s, c, sdf, cdf, store_view.categories_rows(store)) + store_view.problem_table(store)
                + (store_view.holds_rows(store),))

    def show_page(page):
        """The gallery is drawn only here: when the tab is opened, on Refresh, paging and imports."""
        gp = store_view.gallery(store, page)
        return gp.items, gp.page, gp.label, gp.ids

    def refresh_all(page):
        return refresh_counts() + show_page(page)

    counts = [by_status, by_cat, status_plot, cat_plot, cats_table, problems_line, problems, holds]
    page_outs = [gallery, g_page, g_label, g_ids]
    outputs = counts + page_outs
    refresh.click(refresh_all, g_page, outputs, api_name="refresh_store")
    g_prev.click(lambda p: show_page(p - 1), g_page, page_outs)
    g_next.click(lambda p: show_page(p + 1), g_page, page_outs)
    def import_images(paths, request: gr.Request):
        return refused(roles, request, "import") or store_view.upload_images(store, paths or [])

    def import_labels(j, im, a, review, request: gr.Request):
        return refused(roles, request, "import") or store_view.upload_coco(store, j, im or [], a, review,
                                                                           roles.name(request))

    upload.click(import_images, inputs=files, outputs=report, api_name="import_images").then(
        refresh_all, g_page, outputs)
    import_coco.click(import_labels, inputs=[coco_json, coco_images, as_props, needs_review], outputs=report,
                      api_name="import_coco").then(refresh_all, g_page, outputs)

    def save_cat(cid, name, sup, kps, skel):
        try:
            cid = id_field(cid, "category id")
            names = cat_db.parse_keypoints(kps)
            pairs = cat_db.parse_skeleton(skel, len(names))
            if cid is None:
                new = cat_db.add(store, name, sup, names, pairs)
                trained = model_view.api.active_version(store)
                return f"added category {new} '{name}'" + (
                    f". The active model (version {trained.id}) was trained without it: it goes on proposing the "
                    f"other categories; fine-tune (Model tab) to have it propose '{text.escape(name)}' too"
                    if trained is not None else "")
            cat_db.update_category(store, cid, name=name, supercategory=sup, keypoints=names, skeleton=pairs)
            return f"updated category {cid}"
        except UserError as e:
            return str(e)

    def delete_cat(cid, move, del_anns):
        try:
            cid, move = id_field(cid, "category id"), id_field(move, "category id to move to")
            if cid is None:
                return "enter the id of the category to delete"
            n = cat_db.delete(store, cid, move_to=move, delete_annotations=del_anns)
            return f"deleted category {cid}" + (f" ({n} annotation(s) moved or deleted)" if n else "")
        except UserError as e:
            return str(e)

    # the messages quote category names: plain text, escaped for the Markdown component
    def save_cat_checked(cid, name, sup, kps, skel, request: gr.Request):
        return text.escape(refused(roles, request, "categories") or save_cat(cid, name, sup, kps, skel))

    def delete_cat_checked(cid, move, del_anns, request: gr.Request):
        return text.escape(refused(roles, request, "categories") or delete_cat(cid, move, del_anns))

    def assign(user, folder, cat, status, ids, request: gr.Request):
        return text.escape(refused(roles, request, "assign") or store_view.assign(
            store, user, folder, cat, status, ids, roles.name(request)))

    def unassign(user, folder, cat, status, ids, request: gr.Request):
        return text.escape(refused(roles, request, "assign") or store_view.unassign(
            store, user, folder, cat, status, ids))

    picked = [a_user, a_folder, a_cat, a_status, a_ids]
    a_go.click(assign, picked, a_msg).then(refresh_counts, None, counts)
    a_back.click(unassign, picked, a_msg).then(refresh_counts, None, counts)
    c_save.click(save_cat_checked, [c_id, c_name, c_super, c_kps, c_skel], c_msg).then(refresh_all, g_page, outputs)
    c_delete.click(delete_cat_checked, [c_id, c_move, c_del_anns], c_msg).then(refresh_all, g_page, outputs)
    return ((refresh_counts, counts), (show_page, g_page, page_outs), (gallery, g_ids),
            (import_row, cat_edit, assign_edit))
