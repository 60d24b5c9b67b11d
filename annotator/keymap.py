"""The labeling page's one keymap, as data: every key the canvas or the page acts on, what it does, and where.

Three readers, one table:
- the canvas (``canvas.js``) is sent ``BINDINGS`` as JSON (``canvas_prelude``, put in front of its code): it
  looks each key press up here and hands the action to the current tool's object or to its own actions; a key
  that is not in the table does nothing on the canvas;
- the page (``page_script``, the ``<head>`` script) clicks a binding's ``button`` when the canvas does not
  take the key (the pointer is elsewhere and the focus is not on the canvas);
- the help (``help_markdown``) lists every binding.

A key is named as ``key_id`` in the browser names it (``KEY_ID_JS``): a printable character as typed (``a``,
``A`` for Shift+a, ``[``, ``1``), ``Space``, a named key as the browser names it (``Enter``, ``Delete``,
``ArrowRight``), with ``Ctrl+`` (Ctrl or Cmd), ``Shift+`` and ``Alt+`` in front where held (for a printable
character with Ctrl, the lower-case character: ``Ctrl+z``, ``Ctrl+Shift+z``). Adding a tool: its object in
canvas.js's ``TOOLS`` and one ``tool:<name>`` line here.
"""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class Binding:
    keys: tuple[str, ...]  # key ids (see the module's docstring)
    action: str  # what canvas.js does: a tool's own key (its ``keys``), else one of its ``ACTIONS``
    help: str  # what the help says it does
    canvas: bool = True  # the canvas acts on it while the pointer is over the picture or the focus is on it
    button: str | None = None  # elsewhere (the focus not in a text field), the page clicks this button


TOOL_PREFIX = "tool:"

BINDINGS: tuple[Binding, ...] = (
    Binding(("Tab",), "next_instance", "select the next instance"),
    Binding(("Shift+Tab",), "prev_instance", "select the previous instance"),
    Binding(("a",), "accept", "accept the selected instance and go to the next unreviewed one", button="btn-accept"),
    Binding(("r",), "reject", "reject the selected instance and go to the next unreviewed one", button="btn-reject"),
    Binding(("A",), "accept_all", "accept every unreviewed proposal shown (at or above the min score)",
            button="btn-accept-all"),
    Binding(("R",), "reject_rest", "reject the rest: every proposal still unreviewed (a rejected instance is no "
            "longer selected)", button="btn-reject-rest"),
    Binding(("Delete", "Backspace"), "delete", "delete the selected instance", button="btn-delete"),
    Binding(("s", "Ctrl+s"), "save", "save", button="btn-save"),
    Binding(("n", "ArrowRight"), "next_image", "next image (moving on saves)", canvas=False, button="btn-next"),
    Binding(("p", "ArrowLeft"), "prev_image", "previous image", canvas=False, button="btn-prev"),
    Binding(("z", "Ctrl+z"), "undo", "undo", button="btn-undo"),
    Binding(("y", "Ctrl+Shift+z"), "redo", "redo", button="btn-redo"),
    Binding(("v",), "tool:select", "select: click an instance; drag a handle of the selected one (its box's corners "
            "and edges, its polygon's vertices, its keypoints); drag empty space to pan. Dragging a box handle "
            "inward cuts the mask to the box; outward asks the model for the object in the larger box (the mask is "
            "replaced, the class kept; undo brings the old one back); without a model only the inward part is "
            "done (an outward drag is refused and the handle goes back): paint the missing part with the brush"),
    Binding(("b",), "tool:brush", "brush: drag to paint the selected mask ([ and ] size); with nothing selected, "
            "a new instance of the chosen class"),
    Binding(("e",), "tool:eraser", "eraser: drag to erase from the selected mask ([ and ] size)"),
    Binding(("g",), "tool:polygon", "polygon: click vertices; click the first vertex or Enter closes, Escape "
            "cancels; it adds to the selected mask, subtracts, or becomes a new instance (the toolbar's choice). "
            "A new instance keeps its polygon: its vertices can be dragged"),
    Binding(("m",), "tool:box", "box: drag a new box for the selected instance (its mask is cut to it; a box "
            "reaching outside the mask asks the model, as with the handles)"),
    Binding(("k",), "tool:keypoint", "keypoint: click to place the chosen keypoint of the selected instance; the "
            "choice then steps to the next missing one. Drag a box to place the whole skeleton in it (laid out as "
            "this class's labeled instances are, else a standing person or a spread), then drag the points"),
    Binding(("x",), "tool:assist", "assist: drag a rough box around an object (or click it): the model finds it"),
    Binding(("w",), "tool:wand", "magic wand: click the picture to grow a region of similar colour from that pixel "
            "(the toolbar's tolerance, or [ and ]); click inside it or Enter adds it to the selected mask (with Alt "
            "held, or the toolbar's choice, subtracts it); with nothing selected, a new instance of the chosen "
            "class. The region stays within the part of the picture on screen, at most 2048 pixels a side around "
            "the click (zoom in for finer work)"),
    Binding(("[",), "smaller", "brush and eraser smaller (wand: lower tolerance)"),
    Binding(("]",), "larger", "brush and eraser larger (wand: higher tolerance)"),
    Binding(tuple("123456789"), "class", "class 1 to 9 of the class menu: of the selected instance, else of new "
            "instances"),
    Binding(("Enter",), "commit", "finish the shape: close the polygon, apply the wand's region"),
    Binding(("Escape",), "cancel", "cancel the shape being drawn (or deselect)"),
    Binding(("o",), "occlude", "keypoint under the pointer: visible ⇄ occluded (also: right click)"),
    Binding(("f",), "fit", "fit the image"),
    Binding(("0",), "one_to_one", "zoom to one image pixel per screen pixel (1:1)"),
    Binding(("Space",), "pan", "hold and drag to pan"),
)

MOUSE: tuple[tuple[str, str], ...] = (  # pointer gestures, for the help only (the canvas's pointer handlers)
    ("wheel", "zoom around the pointer"),
    ("middle drag, Space+drag, or drag empty space with *select*", "pan"),
    ("right click", "keypoint under the pointer: visible ⇄ occluded"),
)

KEY_ID_JS = """(e) => {  // a key press's name in maskloop's keymap (annotator/keymap.py)
  const k = e.key, ctrl = e.ctrlKey || e.metaKey, one = k.length === 1;
  const mods = (ctrl ? 'Ctrl+' : '') + (e.altKey ? 'Alt+' : '');
  if (k === ' ') return mods + (e.shiftKey ? 'Shift+' : '') + 'Space';
  if (one && !ctrl) return mods + k;
  return mods + (e.shiftKey ? 'Shift+' : '') + (one ? k.toLowerCase() : k);
}"""

TYPING_JS = """(t, e) => {  // the key goes to a field being typed in (a text field; a slider's own keys)
  if (!t || !t.tagName) return false;
  if (t.isContentEditable || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT') return true;
  if (t.tagName !== 'INPUT') return false;
  if (t.type === 'range') return /^(Arrow|Home$|End$|Page)/.test(e.key);  // a slider is not a text field
  return !['checkbox', 'radio', 'button', 'submit', 'reset', 'color', 'file'].includes(t.type);
}"""


def tools() -> list[str]:
    """The canvas's tools in toolbar order."""
    return [b.action[len(TOOL_PREFIX):] for b in BINDINGS if b.action.startswith(TOOL_PREFIX)]


def display(key: str) -> str:
    """A key id as the help writes it."""
    names = {"ArrowRight": "→", "ArrowLeft": "←", "Delete": "Delete", "Backspace": "Backspace"}
    if len(key) == 1 and key.isalpha() and key.isupper():
        return f"Shift+{key}"
    if key.startswith("Ctrl+"):
        head, _, last = key.rpartition("+")
        return f"{head}+{last.upper() if len(last) == 1 else last}"
    return names.get(key, key)


def _where(b: Binding) -> str:
    if b.canvas and b.button:
        return "anywhere"
    return "over the picture" if b.canvas else "anywhere (after the edits on their way)"


def help_markdown() -> str:
    """The help's table of keys (one row per binding) and pointer gestures, then what each tool does."""
    rows = ["| key | action | works |", "|---|---|---|"]
    for b in BINDINGS:
        keys = (" or " if len(b.keys) <= 3 else " ").join(f"`{display(k)}`" for k in b.keys)
        what = f"tool: {b.help.split(':')[0]}" if b.action.startswith(TOOL_PREFIX) else b.help
        rows.append(f"| {keys} | {what} | {_where(b)} |")
    rows += [f"| {m} | {what} | over the picture |" for m, what in MOUSE]
    tools_ = "\n".join(f"- `{display(b.keys[0])}` *{b.help.split(':')[0]}*:{b.help.split(':', 1)[1]}."
                       for b in BINDINGS if b.action.startswith(TOOL_PREFIX))
    return ("\n".join(rows) + "\n\nKeys that work *over the picture* do so while the pointer is over it or it has "
            "the focus (a click on it gives the focus back without changing the selection when the focus was in "
            "a field or on a slider).\n\n**Tools.**\n" + tools_ + "\n")


def as_json() -> str:
    return json.dumps([dataclasses.asdict(b) for b in BINDINGS], ensure_ascii=False)


def canvas_prelude() -> str:
    """What canvas.js is given in front of its code: the table and the key naming it shares with the page."""
    return f"const KEYMAP = {as_json()};\nconst keyId = {KEY_ID_JS};\nconst typingInto = {TYPING_JS};\n"


def page_script() -> str:
    """The page's ``<head>`` script: a binding's button clicked for its key wherever the canvas does not take it
    (canvas.js acts first while the pointer is over the picture or it has the focus, and stops the key then)."""
    keys = {k: b.button for b in BINDINGS if b.button for k in b.keys}
    return f"""<script>
(() => {{
  const KEYS = {json.dumps(keys)};
  const keyId = {KEY_ID_JS};
  const typingInto = {TYPING_JS};
  document.addEventListener('keydown', (e) => {{
    const t = e.target;
    if (e.key === 'Enter' && t && t.closest && t.closest('#jump-id')) {{  // an id typed and opened: the keys go
      setTimeout(() => t.blur(), 0);                                     // back to labeling, not the box
      return;
    }}
    if (typingInto(t, e)) return;
    const id = KEYS[keyId(e)];
    const root = id && document.getElementById(id);
    const el = root && (root.tagName === 'BUTTON' ? root : root.querySelector('button'));
    if (el) {{ e.preventDefault(); el.click(); }}
  }});
}})();
</script>
"""


def problems() -> list[str]:
    """What is wrong with the table (tests/annotator/test_keymap.py): a key bound twice, a key id that the
    browser never produces, a tool named twice."""
    out, seen = [], {}
    for b in BINDINGS:
        for k in b.keys:
            if k in seen:
                out.append(f"{k!r} is bound to both {seen[k]!r} and {b.action!r}")
            seen[k] = b.action
    names = tools()
    if len(set(names)) != len(names):
        out.append(f"a tool is named twice: {names}")
    return out
