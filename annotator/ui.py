"""The Gradio application. Callbacks are thin: they call plain functions in annotator/ (labeling, view,
store_view), db/ and model.api, which the tests call too."""

from __future__ import annotations

import contextlib

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from annotator import model_view, store_view, text, view
from annotator.access import LoginGuard, LoginRequired
from annotator.background import BackgroundProposer
from annotator.labeling import LabelSession, SaveConflict
from db import categories as cat_db
from db.errors import UserError
from db.instances import Instances
from db.store import Store
from model.api import ModelOptions

TOOLS = ["select", "brush", "eraser", "polygon", "box", "assist", "keypoint"]
VIS = {"visible (2)": 2, "occluded (1)": 1, "not labeled (0)": 0}

SHORTCUTS = """
| key | action |
|---|---|
| `a` | accept the selected instance |
| `r` | reject the selected instance |
| `Delete` | delete the selected instance |
| `n` or `→` | next image |
| `p` or `←` | previous image |
| `s` or `Ctrl+S` | save (marks the image done) |
| `z` or `Ctrl+Z` | undo |
| `y` or `Ctrl+Shift+Z` | redo |
| `v` | select tool |
| `b` | brush |
| `e` | eraser |
| `g` | polygon |
| `k` | keypoint |
| `x` | assist (two corners of a rough box: the model finds the object in it) |

Clicking the image: *select* picks the smallest instance under the pointer; *brush*/*eraser* paint a dab of
the brush size on the selected mask (for drag strokes, load the mask into the paint canvas below the image,
paint or erase there, then apply) (with nothing selected, the brush starts a new instance of the "new
instance class"); *polygon* places vertices (then add, subtract or make a new instance); *box* takes two
opposite corners; *assist* takes two opposite corners of a rough box around an object the proposals missed,
and the active model's heads find that object's mask (and keypoints) in exactly that box: it arrives as a new
selected instance, to accept (`a`) or edit; *keypoint* places the chosen keypoint on the selected instance.

Moving to another image **saves** unsaved edits first. Saving marks the image done; proposals you did not
accept are saved as rejected.
"""

HOTKEYS_JS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  const k = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  let id = null, tool = null;
  if (ctrl && (k === 's' || k === 'S')) id = 'btn-save';
  else if (ctrl && e.shiftKey && (k === 'z' || k === 'Z')) id = 'btn-redo';
  else if (ctrl && (k === 'z' || k === 'Z')) id = 'btn-undo';
  else if (ctrl) return;
  else id = {a: 'btn-accept', r: 'btn-reject', Delete: 'btn-delete', n: 'btn-next', ArrowRight: 'btn-next',
             p: 'btn-prev', ArrowLeft: 'btn-prev', s: 'btn-save', z: 'btn-undo', y: 'btn-redo'}[k] || null;
  if (!id) tool = {v: 'select', b: 'brush', e: 'eraser', g: 'polygon', k: 'keypoint', x: 'assist'}[k] || null;
  if (tool) {
    const input = document.querySelector('#tool input[value="' + tool + '"]');
    if (input) { e.preventDefault(); input.click(); }
    return;
  }
  if (!id) return;
  const root = document.getElementById(id);
  const el = root && (root.tagName === 'BUTTON' ? root : root.querySelector('button'));
  if (el) { e.preventDefault(); el.click(); }
});
</script>
"""


def markdown(*args, **kwargs) -> gr.Markdown:
    """A Markdown component with LaTeX off: a file name like ``$$\\Huge{x}$$`` is text to show, not a formula
    (annotator.text.escape handles HTML and Markdown; KaTeX would still render text between dollars)."""
    return gr.Markdown(*args, latex_delimiters=[], **kwargs)


def _user(request: gr.Request | None, store: Store) -> str:
    """Who saves: the logged-in user under --auth, else the store's default user."""
    return getattr(request, "username", None) or store.settings.user


class LabelTab:
    """The label view: queue, picture, instance list, tools, history, save."""

    def __init__(self, store: Store, proposer: BackgroundProposer):
        self.store, self.proposer = store, proposer

    # --- helpers --------------------------------------------------------------------------------------
    def outputs(self, ls: LabelSession | None, min_score: float, pending: list, message: str = ""):
        if ls is None:
            return (None, [], text.escape(message or "No images yet: import some in the Dataset tab."), "", None,
                    gr.update(choices=[], value=None))
        picture = view.compose(ls, min_score, pending)
        rows = view.instance_rows(ls, min_score)
        info = (f"**Image {ls.image_id}** · {text.escape(ls.file_name)} · {ls.width}×{ls.height} · "
                f"status **{text.escape(ls.status)}**"
                + (" · unsaved edits" if ls.dirty else ""))
        kp_names = []
        if ls.selected is not None:
            kp_names = ls.categories[ls.instances[ls.selected].category_id].keypoints
        if self.proposer.last_error:
            message = (message + "\n" if message else "") + self.proposer.last_error
            self.proposer.last_error = ""
        if ls.broken:  # rows that cannot be shown are named, never hidden silently
            message = "\n".join([message] * bool(message) + ls.broken)
        return (picture, rows, text.escape(message), info, ls.selected,
                gr.update(choices=kp_names, value=kp_names[0] if kp_names else None))

    def open(self, image_id, ls, min_score, request=None, note: str = ""):
        """Open an image (saving unsaved edits of the current one first)."""
        msg = note
        if ls is not None and ls.dirty and image_id != ls.image_id:
            try:
                ls.save(_user(request, self.store))
                msg = f"saved image {ls.image_id}. " + msg
            except SaveConflict:  # stay on this image: its edits must not be left behind unsaved
                return (ls, []) + self.outputs(ls, min_score, [], ls.rebase() + " (You stayed on this image.)")
        if image_id is None:
            return (ls, []) + self.outputs(ls, min_score, [], msg or "Nothing more in this queue.")
        try:
            new = LabelSession(self.store, int(image_id))
        except UserError as e:
            return (ls, []) + self.outputs(ls, min_score, [], str(e))
        ids = view.queue(self.store)
        if new.image_id in ids:
            k = ids.index(new.image_id)
            self.proposer.want(ids[k + 1:k + 4])
        return (new, []) + self.outputs(new, min_score, [], msg)

    def step(self, which, ls, min_score, step, request=None):
        ids = view.queue(self.store, which)
        target = view.neighbour(ids, ls.image_id if ls else None, step)  # before saving moves it out
        return self.open(target, ls, min_score, request)

    def act(self, fn, ls, min_score, pending, clear_pending=False):
        if ls is None:
            return (ls, pending) + self.outputs(ls, min_score, pending, "Open an image first.")
        try:
            msg = fn(ls) or ""
        except UserError as e:
            msg = str(e)
        else:
            if clear_pending:
                pending = []
        return (ls, pending) + self.outputs(ls, min_score, pending, msg)

    def click(self, ls, pending, tool, brush, min_score, kp_name, vis, new_class, evt: gr.SelectData):
        if ls is None:
            return (ls, pending) + self.outputs(ls, min_score, pending, "Open an image first.")
        scale = view.display_scale(ls)
        x, y = evt.index[0] / scale, evt.index[1] / scale
        radius = float(brush) / scale

        def do(ls):
            if tool == "select":
                i = ls.select_at(x, y, min_score)
                return "nothing there" if i is None else f"selected #{i}"
            if tool in ("brush", "eraser"):
                if ls.selected is None and tool == "brush":
                    if new_class is None:
                        raise UserError("select an instance to paint on, or choose a new instance class")
                    i = ls.new_instance(int(new_class), stroke=([(x, y)], radius))
                    return f"new instance #{i}"
                ls.paint([(x, y)], radius, erase=tool == "eraser")
                return ""
            if tool in ("polygon", "box", "assist"):
                pending.append((x, y))
                if tool == "box" and len(pending) == 2:
                    (x0, y0), (x1, y1) = pending
                    pending.clear()
                    ls.set_box(x0, y0, x1, y1)
                    return "box set"
                if tool == "assist" and len(pending) == 2:
                    (x0, y0), (x1, y1) = pending
                    pending.clear()
                    return self.assist(ls, [x0, y0, x1, y1])
                return f"{len(pending)} point(s)"
            if tool == "keypoint":
                if not kp_name:
                    raise UserError("select an instance whose class has keypoints, then pick a keypoint name")
                ls.set_keypoint(kp_name, x, y, VIS.get(vis, 2))
                return f"placed {kp_name}"
            return ""

        try:
            msg = do(ls)
        except UserError as e:
            msg = str(e)
        return (ls, pending) + self.outputs(ls, min_score, pending, msg)

    def assist(self, ls: LabelSession, box: list[float]) -> str:
        """Box assist on the open image: the model's instance in that box becomes a new selected instance."""
        got = self.proposer.assist_box(ls.image_id, box, None)
        found = Instances.from_coco([{k: v for k, v in got.items() if v is not None}], ls.height, ls.width,
                                    source="assist", state="proposed")
        i = ls.add_found(found)
        name = ls.categories[found.category_ids[0]].name
        return f"assist found #{i} {name} (score {got['score']:.2f}): accept (a), edit, or set its class"

    def save(self, ls, min_score, request=None):
        if ls is None:
            return (ls, []) + self.outputs(ls, min_score, [], "Open an image first.")
        try:
            ls.save(_user(request, self.store))
            return (ls, []) + self.outputs(ls, min_score, [], f"saved image {ls.image_id}: done")
        except SaveConflict:
            return (ls, []) + self.outputs(ls, min_score, [], ls.rebase())

    def propose_again(self, ls, min_score, request=None):
        if ls is None:
            return (ls, []) + self.outputs(ls, min_score, [], "Open an image first.")
        if ls.dirty:
            return (ls, []) + self.outputs(ls, min_score, [], "Save or undo your edits before proposing again.")
        try:
            r = self.proposer.propose_now(ls.image_id)
        except UserError as e:
            return (ls, []) + self.outputs(ls, min_score, [], str(e))
        return self.open(ls.image_id, None, min_score, request, note=f"{r['proposals']} new proposal(s)")

    # --- layout ---------------------------------------------------------------------------------------
    def build(self, demo: gr.Blocks):
        store = self.store
        sess, pending = gr.State(None), gr.State([])
        with gr.Row():
            which = gr.Dropdown(view.QUEUE_FILTERS, value=view.QUEUE_FILTERS[0], label="Queue", scale=2,
                                elem_id="queue-filter")
            prev_b = gr.Button("◀ Previous (p)", elem_id="btn-prev", scale=1)
            next_b = gr.Button("Next (n) ▶", elem_id="btn-next", scale=1)
            jump = gr.Number(label="Image id", precision=0, scale=1, elem_id="jump-id")
            go = gr.Button("Open", elem_id="btn-open", scale=1)
        info = markdown(elem_id="image-info")
        with gr.Row():
            with gr.Column(scale=3):
                canvas = gr.Image(label="Click to select / paint / place", interactive=False, type="numpy",
                                  format="jpeg", elem_id="canvas", show_label=False)
                msg = markdown(elem_id="message")
            with gr.Column(scale=2):
                tool = gr.Radio(TOOLS, value="select", label="Tool", elem_id="tool")
                with gr.Row():
                    brush = gr.Slider(1, 60, value=8, step=1, label="Brush size (px on screen)", elem_id="brush-size")
                    min_score = gr.Slider(0, 1, value=0.0, step=0.05, label="Hide proposals below score",
                                          elem_id="score-slider")
                table = gr.Dataframe(headers=["#", "class", "score", "source", "state", "keypoints"],
                                     interactive=False, elem_id="instances", label="Instances (click a row)")
                selected = gr.Number(label="Selected #", precision=0, elem_id="selected")
                with gr.Row():
                    accept_b = gr.Button("Accept (a)", elem_id="btn-accept", variant="primary")
                    reject_b = gr.Button("Reject (r)", elem_id="btn-reject")
                    delete_b = gr.Button("Delete (Del)", elem_id="btn-delete", variant="stop")
                    accept_all_b = gr.Button("Accept all shown", elem_id="btn-accept-all")
                with gr.Row():
                    cls = gr.Dropdown(label="Class", elem_id="class-dropdown")
                    set_cls_b = gr.Button("Set class", elem_id="btn-set-class")
                with gr.Row():
                    new_cls = gr.Dropdown(label="New instance class", elem_id="new-class")
                    poly_new_b = gr.Button("Polygon → new instance", elem_id="btn-poly-new")
                with gr.Row():
                    poly_add_b = gr.Button("Polygon: add", elem_id="btn-poly-add")
                    poly_sub_b = gr.Button("Polygon: subtract", elem_id="btn-poly-sub")
                    clear_b = gr.Button("Clear points", elem_id="btn-clear-points")
                    box_mask_b = gr.Button("Box from mask", elem_id="btn-box-from-mask")
                with gr.Row():
                    kp = gr.Dropdown(label="Keypoint", elem_id="kp-name")
                    vis = gr.Radio(list(VIS), value="visible (2)", label="Visibility", elem_id="kp-vis")
                    vis_b = gr.Button("Set visibility", elem_id="btn-kp-vis")
                with gr.Row():
                    undo_b = gr.Button("Undo (z)", elem_id="btn-undo")
                    redo_b = gr.Button("Redo (y)", elem_id="btn-redo")
                    save_b = gr.Button("Save (s)", elem_id="btn-save", variant="primary")
                    again_b = gr.Button("Propose again", elem_id="btn-propose-again")
        with gr.Accordion("Paint with strokes (drag the brush or eraser over the selected mask)", open=False,
                          elem_id="paint-panel"):
            painter = gr.ImageEditor(type="numpy", image_mode="RGBA", format="png", sources=(), transforms=(),
                                     layers=gr.LayerOptions(allow_additional_layers=False, layers=["mask"]),
                                     brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=12),
                                     eraser=gr.Eraser(default_size=12), label="Selected mask", elem_id="painter")
            with gr.Row():
                paint_load = gr.Button("Load the selected mask", elem_id="btn-paint-load")
                paint_apply = gr.Button("Apply strokes to the selected mask", variant="primary",
                                        elem_id="btn-paint-apply")
        with gr.Accordion("Keyboard shortcuts and help", open=False, elem_id="help-panel"):
            markdown(SHORTCUTS)

        outs = [sess, pending, canvas, table, msg, info, selected, kp]

        def cat_choices():
            choices = store_view.category_choices(store)
            return gr.update(choices=choices), gr.update(choices=choices, value=choices[0][1] if choices else None)

        def first(ls, ms, request: gr.Request):
            ids = view.queue(store)
            return self.open(ids[0] if ids else None, ls, ms, request)

        def prev_image(w, ls, ms, request: gr.Request):
            return self.step(w, ls, ms, -1, request)

        def next_image(w, ls, ms, request: gr.Request):
            return self.step(w, ls, ms, +1, request)

        def first_in(w, ls, ms, request: gr.Request):
            ids = view.queue(store, w)
            return self.open(ids[0] if ids else None, ls, ms, request)

        def open_id(i, ls, ms, request: gr.Request):
            return self.open(None if i is None else int(i), ls, ms, request)

        def save(ls, ms, request: gr.Request):
            return self.save(ls, ms, request)

        def again(ls, ms, request: gr.Request):
            return self.propose_again(ls, ms, request)

        demo.load(first, [sess, min_score], outs).then(cat_choices, None, [cls, new_cls])
        prev_b.click(prev_image, [which, sess, min_score], outs)
        next_b.click(next_image, [which, sess, min_score], outs)
        go.click(open_id, [jump, sess, min_score], outs)
        which.input(first_in, [which, sess, min_score], outs)
        # one label event at a time, in order: quick clicks must each see the previous click's state
        canvas.select(self.click, [sess, pending, tool, brush, min_score, kp, vis, new_cls], outs,
                      concurrency_limit=1, concurrency_id="label")

        def simple(fn, clear=False):
            return lambda ls, p, ms: self.act(fn, ls, ms, p, clear)

        std_in = [sess, pending, min_score]
        accept_b.click(simple(lambda ls: ls.accept()), std_in, outs)
        reject_b.click(simple(lambda ls: ls.reject()), std_in, outs)
        delete_b.click(simple(lambda ls: ls.delete()), std_in, outs)
        accept_all_b.click(lambda ls, p, ms: self.act(lambda s: f"accepted {s.accept_all_shown(ms)}", ls, ms, p),
                           std_in, outs)
        undo_b.click(simple(lambda ls: None if ls.undo() else "nothing to undo"), std_in, outs)
        redo_b.click(simple(lambda ls: None if ls.redo() else "nothing to redo"), std_in, outs)
        box_mask_b.click(simple(lambda ls: ls.box_from_mask()), std_in, outs)
        clear_b.click(lambda ls, p, ms: self.act(lambda s: "points cleared", ls, ms, p, True), std_in, outs)
        poly_add_b.click(lambda ls, p, ms: self.act(lambda s: s.polygon(p), ls, ms, p, True), std_in, outs)
        poly_sub_b.click(lambda ls, p, ms: self.act(lambda s: s.polygon(p, subtract=True), ls, ms, p, True),
                         std_in, outs)
        poly_new_b.click(lambda ls, p, ms, c: self.act(
            lambda s: f"new instance #{s.new_instance(int(c) if c is not None else -1, polygon=p)}", ls, ms, p, True),
            std_in + [new_cls], outs)
        set_cls_b.click(lambda ls, p, ms, c: self.act(
            lambda s: s.set_class(int(c) if c is not None else -1), ls, ms, p), std_in + [cls], outs)
        vis_b.click(lambda ls, p, ms, k, v: self.act(lambda s: s.set_keypoint_visibility(k, VIS[v]), ls, ms, p),
                    std_in + [kp, vis], outs)
        selected.submit(lambda ls, p, ms, i: self.act(lambda s: s.select(None if i is None else int(i)), ls, ms, p),
                        std_in + [selected], outs)

        def row_select(ls, p, ms, evt: gr.SelectData):
            rows = view.instance_rows(ls, ms) if ls is not None else []
            r = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            return self.act(lambda s: s.select(rows[r][0]) if r < len(rows) else None, ls, ms, p)

        table.select(row_select, std_in, outs)

        def load_painter(ls):
            if ls is None or ls.selected is None:
                return gr.update(), text.escape("Select an instance first, then load it into the paint canvas.")
            return view.paint_canvas(ls), text.escape(f"painting instance #{ls.selected}")

        paint_load.click(load_painter, sess, [painter, msg])
        paint_apply.click(lambda ls, p, ms, v: self.act(lambda s: s.set_mask(view.mask_from_canvas(s, v)) or
                                                        "strokes applied", ls, ms, p),
                          std_in + [painter], outs)
        min_score.change(simple(lambda ls: None), std_in, outs)
        save_b.click(save, [sess, min_score], outs)
        again_b.click(again, [sess, min_score], outs)
        return cat_choices, [cls, new_cls]


def _blank(number) -> bool:
    """An empty id field: the browser sends 0 (or None) for it, and ids are never 0."""
    return number is None or int(number) == 0


def dataset_tab(store: Store):
    with gr.Row():
        by_status = gr.Dataframe(headers=["status", "images"], label="Images by status", interactive=False,
                                 elem_id="counts-status")
        by_cat = gr.Dataframe(headers=["category", "accepted", "proposed", "rejected"],
                              label="Annotations by category", interactive=False, elem_id="counts-category")
    with gr.Row():
        status_plot = gr.BarPlot(x="status", y="images", label="Images by status", elem_id="plot-status")
        cat_plot = gr.BarPlot(x="category", y="count", color="state", label="Annotations by category",
                              elem_id="plot-category")
    gallery = gr.Gallery(label="Images (masks drawn)", columns=6, height=420, elem_id="store-gallery")
    with gr.Row():
        g_prev = gr.Button("◀ Previous page", elem_id="gallery-prev", scale=1)
        g_label = markdown(elem_id="gallery-page")
        g_next = gr.Button("Next page ▶", elem_id="gallery-next", scale=1)
        refresh = gr.Button("Refresh", elem_id="refresh-store", scale=1)
    g_page = gr.State(1)
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
    with gr.Accordion("Categories", open=False, elem_id="categories-panel"):
        cats_table = gr.Dataframe(headers=["id", "name", "supercategory", "keypoints", "skeleton", "annotations"],
                                  interactive=False, elem_id="categories-table")
        with gr.Row():
            c_id = gr.Number(label="Category id (blank: new)", precision=0)
            c_name = gr.Textbox(label="Name")
            c_super = gr.Textbox(label="Supercategory")
        with gr.Row():
            c_kps = gr.Textbox(label="Keypoint names (comma separated, in order)")
            c_skel = gr.Textbox(label="Skeleton (1-based pairs: 1-2, 2-3)")
        with gr.Row():
            c_save = gr.Button("Add / update category", elem_id="btn-category-save")
            c_move = gr.Number(label="Move its annotations to category id", precision=0)
            c_del_anns = gr.Checkbox(label="or delete its annotations")
            c_delete = gr.Button("Delete category", variant="stop", elem_id="btn-category-delete")
        c_msg = markdown(elem_id="category-message")

    def refresh_counts():
        s, c = store_view.counts_tables(store)
        sdf = pd.DataFrame(s, columns=["status", "images"])
        cdf = pd.DataFrame([(r[0], st, r[k]) for r in c for k, st in ((1, "accepted"), (2, "proposed"), (3, "rejected"))],
                           columns=["category", "state", "count"])
        return s, c, sdf, cdf, store_view.categories_rows(store)

    def show_page(page):
        """The gallery is drawn only here: when the tab is opened, on Refresh, paging and imports."""
        gp = store_view.gallery(store, page)
        return gp.items, gp.page, gp.label

    def refresh_all(page):
        return refresh_counts() + show_page(page)

    counts = [by_status, by_cat, status_plot, cat_plot, cats_table]
    page_outs = [gallery, g_page, g_label]
    outputs = counts + page_outs
    refresh.click(refresh_all, g_page, outputs, api_name="refresh_store")
    g_prev.click(lambda p: show_page(p - 1), g_page, page_outs)
    g_next.click(lambda p: show_page(p + 1), g_page, page_outs)
    upload.click(lambda p: store_view.upload_images(store, p or []), inputs=files, outputs=report,
                 api_name="import_images").then(
        refresh_all, g_page, outputs)
    import_coco.click(lambda j, im, a: store_view.upload_coco(store, j, im or [], a),
                      inputs=[coco_json, coco_images, as_props], outputs=report, api_name="import_coco").then(
        refresh_all, g_page, outputs)

    def save_cat(cid, name, sup, kps, skel):
        try:
            names = cat_db.parse_keypoints(kps)
            pairs = cat_db.parse_skeleton(skel, len(names))
            if _blank(cid):
                new = cat_db.add(store, name, sup, names, pairs)
                return f"added category {new} '{name}'"
            cat_db.update_category(store, int(cid), name=name, supercategory=sup, keypoints=names, skeleton=pairs)
            return f"updated category {int(cid)}"
        except UserError as e:
            return str(e)

    def delete_cat(cid, move, del_anns):
        if _blank(cid):
            return "enter the id of the category to delete"
        try:
            n = cat_db.delete(store, int(cid), move_to=None if _blank(move) else int(move), delete_annotations=del_anns)
            return f"deleted category {int(cid)}" + (f" ({n} annotation(s) moved or deleted)" if n else "")
        except UserError as e:
            return str(e)

    # the messages quote category names: plain text, escaped for the Markdown component
    c_save.click(lambda *a: text.escape(save_cat(*a)), [c_id, c_name, c_super, c_kps, c_skel], c_msg).then(
        refresh_all, g_page, outputs)
    c_delete.click(lambda *a: text.escape(delete_cat(*a)), [c_id, c_move, c_del_anns], c_msg).then(
        refresh_all, g_page, outputs)
    return (refresh_counts, counts), (show_page, g_page, page_outs)


def export_tab(store: Store, exports: store_view.ExportFolder) -> None:
    with gr.Row():
        with_images = gr.Checkbox(label="Zip with images", elem_id="export-with-images")
        include_props = gr.Checkbox(label="Include unreviewed proposals (with score)", elem_id="export-proposals")
    go = gr.Button("Prepare COCO export", elem_id="export-button")
    out = gr.File(label="Download", elem_id="export-file")
    # one export at a time: preparing one deletes the previous folder, after Gradio copied its file
    go.click(lambda wi, ip: exports.prepare(store, wi, ip), inputs=[with_images, include_props], outputs=out,
             api_name="export", concurrency_limit=1)


def model_tab(store: Store, options: ModelOptions):
    with gr.Row():
        epochs = gr.Number(value=10, label="Epochs", precision=0, elem_id="train-epochs")
        minutes = gr.Number(value=5, label="At most minutes", elem_id="train-minutes")
        size = gr.Radio(["tiny", "full"], value=None, label="Size (blank: the active model's)", elem_id="train-size")
        start = gr.Button("Fine-tune", variant="primary", elem_id="btn-finetune")
        cancel = gr.Button("Cancel", variant="stop", elem_id="btn-cancel")
    job_md = markdown(elem_id="job-status")
    progress = gr.Slider(0, 100, value=0, label="Progress (%)", interactive=False, elem_id="job-progress")
    loss_plot = gr.LinePlot(x="iteration", y="loss", label="Training loss", elem_id="loss-plot")
    versions = gr.Dataframe(headers=model_view.VERSION_HEADERS, interactive=False, elem_id="versions-table",
                            label="Model versions (* = active)")
    with gr.Row():
        v_id = gr.Number(label="Version", precision=0)
        activate_b = gr.Button("Make active", elem_id="btn-activate")
        v_msg = markdown()
    with gr.Row():
        ap_plot = gr.LinePlot(x="version", y="AP", color="metric", label="Held-out AP per version", elem_id="ap-plot")
        fix_plot = gr.LinePlot(x="version", y="value", color="measure", label="How much labelers changed proposals",
                               elem_id="corrections-plot")
    timer = gr.Timer(2.0, active=True)
    last_state = gr.State(None)

    def tables():
        return model_view.version_rows(store), model_view.ap_frame(store), model_view.corrections_frame(store)

    def poll(last):
        j = model_view.job_panel(store)
        ended = j["state"] != last and j["state"] in ("done", "failed", "cancelled")
        refreshed = tables() if ended else (gr.update(), gr.update(), gr.update())
        return (j["markdown"], j["percent"], j["curve"], j["state"]) + refreshed

    def start_job(e, m, sz):
        return model_view.start(store, e, m, sz, options)

    timer.tick(poll, last_state, [job_md, progress, loss_plot, last_state, versions, ap_plot, fix_plot])
    start.click(start_job, [epochs, minutes, size], job_md)
    cancel.click(lambda: model_view.cancel_latest(store), None, job_md)
    activate_b.click(lambda v: model_view.activate_version(store, v), v_id, v_msg).then(
        tables, None, [versions, ap_plot, fix_plot])
    return tables, [versions, ap_plot, fix_plot], timer


# Gradio keeps a copy of every upload and download (an export with images is a full copy of the dataset):
# every 30 minutes, delete those older than an hour; all of them when the app closes.
CACHE_CLEANUP = (1800, 3600)


def build_app(store: Store, proposer: BackgroundProposer | None = None,
              exports: store_view.ExportFolder | None = None, options: ModelOptions | None = None) -> gr.Blocks:
    """The page: Label, Dataset, Model and Export tabs on ``store``; the model runs with ``options``."""
    options = options or ModelOptions()
    proposer = proposer or BackgroundProposer(store, options)
    exports = exports or store_view.ExportFolder()
    with gr.Blocks(title="maskloop", delete_cache=CACHE_CLEANUP) as demo:
        markdown("# maskloop")
        with gr.Tab("Label", id="label"):
            cat_choices, cat_outs = LabelTab(store, proposer).build(demo)
        with gr.Tab("Dataset", id="dataset") as dataset:
            (refresh_counts, counts), (show_page, g_page, page_outs) = dataset_tab(store)
        with gr.Tab("Model", id="model"):
            tables, t_outs, _ = model_tab(store, options)
        with gr.Tab("Export", id="export"):
            export_tab(store, exports)
        def assist(image_id: float, box: list[float], category_id: float | None = None) -> dict:
            return assist_box(proposer, image_id, box, category_id)

        gr.api(assist, api_name="assist_box", api_description=assist_box.__doc__)
        demo.load(refresh_counts, outputs=counts)
        dataset.select(show_page, g_page, page_outs)  # the gallery is drawn when the tab is opened, not on load
        demo.load(tables, outputs=t_outs)
    return demo


def assist_box(proposer: BackgroundProposer, image_id: int, box: list[float], category_id: int | None = None) -> dict:
    """/assist_box: (image_id, [x0, y0, x1, y1] in image pixels, category_id or None) -> {"category_id",
    "score", "bbox" (xywh), "segmentation" (COCO RLE, counts a string), "keypoints" (flat x, y, v, or
    null)}: the active model's instance for exactly that box. Writes nothing; bad input gets a message."""
    try:
        return proposer.assist_box(_whole(image_id, "image id"), box,
                                   None if category_id is None else _whole(category_id, "category id"))
    except UserError as e:
        raise gr.Error(str(e)) from None


def _whole(value, what: str) -> int:
    """A JSON number that must be an integer (clients may send 3.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise UserError(f"{what} {value!r} is not an integer")
    return int(value)


DEFAULT_MAX_UPLOAD_MB = 2048  # uploads (images, zips, COCO files) larger than 2 GiB are refused


def parse_auth(pairs: list[str]) -> list[tuple[str, str]] | None:
    out = []
    for p in pairs:
        user, sep, pw = p.partition(":")
        if not sep or not user or not pw:
            raise UserError(f"--auth {p!r}: expected USER:PASSWORD")
        out.append((user, pw))
    return out or None


def launch(store: Store, host: str = "127.0.0.1", port: int = 7860, auth: list[str] | None = None,
           share: bool = False, block: bool = True, max_upload_mb: float | None = None,
           options: ModelOptions | None = None) -> gr.Blocks:
    """Serve the app. With ``auth`` (USER:PASSWORD strings) a login is required for everything that changes
    state, and failed logins are answered slower and slower (annotator.access). Uploads larger than
    ``max_upload_mb`` MiB (default DEFAULT_MAX_UPLOAD_MB) are refused."""
    max_upload_mb = DEFAULT_MAX_UPLOAD_MB if max_upload_mb is None else max_upload_mb
    if not max_upload_mb > 0:
        raise UserError(f"--max-upload-mb must be a positive number of MiB, not {max_upload_mb}")
    accounts = parse_auth(auth or [])
    guard = LoginGuard(accounts) if accounts else None
    exports = store_view.ExportFolder()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        exports.close()  # the server is shutting down: the last export goes too

    demo = build_app(store, exports=exports, options=options)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, auth=guard.check if guard else None, share=share,
                prevent_thread_lock=not block, show_error=True, head=HOTKEYS_JS, quiet=not block,
                max_file_size=int(max_upload_mb * 2**20),
                app_kwargs={"lifespan": lifespan, "middleware": [Middleware(LoginRequired)] if guard else []})
    return demo
