"""User-given text in Markdown components.

Gradio renders ``gr.Markdown`` values as Markdown with HTML allowed, so a file name, category,
supercategory, keypoint or user name, or a message quoting one, that is put into a Markdown value as it
is can inject HTML (``<img src=...>`` fetches a URL chosen by whoever named the file) or formatting. Every
such string goes through ``escape``; messages are plain text and are escaped whole. LaTeX is off in every
Markdown component (``annotator.widgets.markdown``), so text between dollar signs stays text. Components that show
plain text (Textbox, Dataframe cells, Dropdown choices, Gallery captions) need nothing."""

from __future__ import annotations

import html
import re

# ASCII punctuation with a meaning in Markdown; CommonMark shows a backslash-escaped one literally.
# & < > are left to html.escape (a backslash before an entity would show the entity's text).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:])")


def escape(text: object) -> str:
    """``text`` as Markdown that shows it literally: no HTML element, entity, emphasis, link or heading."""
    return html.escape(_MARKDOWN.sub(r"\\\1", str(text)), quote=False)
