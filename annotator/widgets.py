"""Small pieces every tab of the page uses: Markdown that shows text as text, and the role check of a
callback."""

from __future__ import annotations

import gradio as gr

from annotator.access import Roles
from db.errors import UserError


def markdown(*args, **kwargs) -> gr.Markdown:
    """A Markdown component with LaTeX off: a file name like ``$$\\Huge{x}$$`` is text to show, not a formula
    (annotator.text.escape handles HTML and Markdown; KaTeX would still render text between dollars)."""
    return gr.Markdown(*args, latex_delimiters=[], **kwargs)


def refused(roles: Roles, request, action: str) -> str:
    """"" when this login may do ``action``, else the message naming the role it needs (the server's own
    check: the page only hides what a role cannot do)."""
    try:
        roles.require(request, action)
    except UserError as e:
        return str(e)
    return ""
