"""The page, put together: the Label, Dataset, Model and Export tabs (annotator/label_tab.py, dataset_tab.py,
model_tab.py, export_tab.py), the HTTP routes (annotator/routes.py) and what each role sees. Launching it, with
logins and limits, is annotator/server.py. Callbacks are thin: they call plain functions in annotator/
(labeling, canvas, store_view, model_view), db/ and model.api, which the tests call too."""

from __future__ import annotations

import gradio as gr

from annotator import routes, store_view, text
from annotator.access import Roles
from annotator.background import BackgroundProposer
from annotator.dataset_tab import dataset_tab
from annotator.export_tab import export_tab
from annotator.follow import Follower
from annotator.label_tab import LabelTab
from annotator.limits import CACHE_CLEANUP
from annotator.model_tab import model_tab
from annotator.widgets import markdown
from db import users
from db.store import Store
from model.api import ModelOptions


def build_app(store: Store, proposer: BackgroundProposer | None = None,
              exports: store_view.ExportFolder | None = None, options: ModelOptions | None = None,
              roles: Roles | None = None, follow: bool = True) -> gr.Blocks:
    """The page: Label, Dataset, Model and Export tabs on ``store``; the model runs with ``options``; each
    login may do what its role allows (``roles``; without one everyone is the local admin). ``follow``: the
    app re-proposes with each newly active model and starts the automatic fine-tunes (annotator.follow)."""
    roles = roles or Roles(store)
    options = options or ModelOptions()
    proposer = proposer or BackgroundProposer(store, options)
    follower = Follower(store, proposer).start() if follow else None
    exports = exports or store_view.ExportFolder()
    with gr.Blocks(title="maskloop", delete_cache=CACHE_CLEANUP) as demo:
        with gr.Row():
            markdown("# maskloop")
            who = markdown(elem_id="who", visible=roles.login)
        with gr.Tabs() as tabs:
            with gr.Tab("Label", id="label") as label_page:
                label_tab = LabelTab(store, proposer, roles)
                label_tab.build(demo)
            with gr.Tab("Dataset", id="dataset") as dataset:
                (refresh_counts, counts), (show_page, g_page, page_outs), (gallery, g_ids), admin_parts = \
                    dataset_tab(store, roles)
            with gr.Tab("Model", id="model") as model_page:
                tables, t_outs, _, train_parts = model_tab(store, options, roles, follower)
            with gr.Tab("Export", id="export"):
                export_parts = export_tab(store, exports, roles)

        def for_role(request: gr.Request):
            """The page as this login's role sees it: what it may not do is hidden (and refused anyway)."""
            role = roles.role(request)
            line = (f"{text.escape(roles.name(request))} · {role or 'no account'} · [log out](/logout)"
                    if roles.login else "")
            return ((line, gr.update(visible=users.may(role, "review")))
                    + tuple(gr.update(visible=users.may(role, a)) for a in ("import", "categories", "assign",
                                                                             "train", "activate", "export"))
                    + (gr.update(visible=not users.may(role, "export")),))

        demo.load(for_role, None, [who, label_tab.review_panel, *admin_parts, *train_parts, *export_parts])

        def open_thumbnail(ids, ls, evt: gr.SelectData, request: gr.Request):
            """A gallery thumbnail clicked: its image opens in the Label tab."""
            k = evt.index if isinstance(evt.index, int) else evt.index[0]
            image_id = ids[k] if 0 <= k < len(ids) else None
            return (gr.Tabs(selected="label"),) + label_tab.open_from(image_id, ls, request)

        label_page.select(label_tab.on_show, [label_tab.sess], [label_tab.sess, label_tab.board],
                          **label_tab.label_events)
        gallery.select(open_thumbnail, [g_ids, label_tab.sess], [tabs, label_tab.sess, label_tab.board],
                       **label_tab.label_events)
        gallery.select(None, js="() => { window.scrollTo({top: 0}); }")  # the Label tab from its top
        routes.add(store, proposer, roles, label_tab.rate)
        demo.load(refresh_counts, outputs=counts)

        def closed(request: gr.Request):
            """The browser tab went away: its pages end (what they held is freed)."""
            label_tab.end_browser(getattr(request, "session_hash", None))

        demo.unload(closed)
        dataset.select(show_page, g_page, page_outs)  # the gallery is drawn when the tab is opened, not on load
        demo.load(tables, outputs=t_outs)
        # drawn again when the tab is shown: a plot drawn while its tab was hidden has no size to lay out in (one
        # version's points went missing and its values became the axis's ticks)
        model_page.select(tables, outputs=t_outs)
    demo.label_tab = label_tab  # its open pages (launch ends a login's pages when it logs out)
    demo.follower = follower
    return demo
