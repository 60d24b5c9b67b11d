"""User-given text (file names, category and keypoint names, messages quoting them) is escaped wherever
it goes into a Markdown component, so it is shown literally and never becomes HTML."""

from types import SimpleNamespace

from sqlalchemy import update

from tests.annotator.pages import page_of
from annotator import model_view, text
from annotator.labeling import LabelSession
from annotator.label_tab import LabelTab
from db import jobs
from db.coco_import import import_coco
from db.errors import UserError
from db.schema import Image

HOSTILE = "<img src=http://127.0.0.1:1/x onerror=alert(1)>"


def test_escape_leaves_no_html_and_no_markdown():
    out = text.escape(HOSTILE + " **bold** [link](http://a) # h & &amp;")
    assert "<" not in out and ">" not in out
    assert "&lt;img" in out and "&amp;amp;" in out  # entities are shown as typed
    assert "**" not in out and "](" not in out and "http://" not in out  # no emphasis, links or autolinks
    assert text.escape("plain name 7") == "plain name 7"


def test_label_view_sends_names_and_messages_as_data_that_the_canvas_shows_as_text(store, synth_dir):
    """The label view's image line, message and instance list are drawn by canvas.js from the canvas data:
    the names travel as plain strings and the script puts them in the page only as text."""
    import re

    from annotator import canvas

    import_coco(store, synth_dir / "annotations.json", synth_dir)
    with store.session() as s:
        s.execute(update(Image).where(Image.id == 1).values(file_name=HOSTILE + ".png"))
        s.commit()
    proposer = SimpleNamespace(last_error=f"proposals failed for {HOSTILE}.png", want=lambda ids: None)
    tab = LabelTab(store, proposer)
    ls = LabelSession(store, 1)
    _, data = tab.outputs(page_of(ls), f"placed {HOSTILE}")
    assert data["file_name"] == HOSTILE + ".png" and HOSTILE in data["message"]
    assert "proposals failed" in data["message"]  # the background error is told once
    _, empty = tab.outputs(None, f"no image {HOSTILE}")
    assert empty["message"] == f"no image {HOSTILE}"
    # every innerHTML in canvas.js is a constant (its toolbar); data reaches the page through textContent
    for line in canvas.JS.splitlines():
        if "innerHTML" in line and "=" in line.split("innerHTML", 1)[1][:3]:
            assigned = line.split("innerHTML", 1)[1]
            assert not re.search(r"\b(data|it|c|S)\.", assigned), line


def test_model_view_escapes_job_and_error_messages(store, monkeypatch):
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "failed", f"category {HOSTILE} has no accepted instances")
    panel = model_view.job_panel(store)["markdown"]
    assert "<img" not in panel and panel.startswith(f"**Job {jid}: failed** — category &lt;img")

    def refuse(*a, **k):
        raise UserError(f"category {HOSTILE} has no accepted instances")

    monkeypatch.setattr(model_view.api, "training_data_problem", lambda store: None)  # (an empty store)
    monkeypatch.setattr(model_view.api, "start_training_process", refuse)
    monkeypatch.setattr(model_view.api, "activate", refuse)
    for shown in (model_view.start(store, 1, 1, "tiny"), model_view.activate_version(store, 3)):
        assert "<img" not in shown and "&lt;img" in shown


def test_no_markdown_component_renders_latex(store):
    """A file name like $$\\Huge{BIG}$$ must show as text: KaTeX is off in every Markdown component."""
    import gradio as gr

    from annotator.background import BackgroundProposer
    from annotator.ui import build_app

    demo = build_app(store, BackgroundProposer(store))
    mds = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert len(mds) >= 6 and all(b.latex_delimiters == [] for b in mds)
