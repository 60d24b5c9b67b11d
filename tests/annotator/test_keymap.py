"""The page's one keymap (annotator/keymap.py): no key bound twice, the help lists every binding, the page's
hotkeys click buttons that exist, and the canvas acts on keys only through the table (the browser checks the
same at run time: test_browser_tools.py reads canvas.js's S.keymap)."""

import re
from pathlib import Path

from annotator import canvas, keymap, label_tab

JS = (Path(canvas.__file__).parent / "canvas.js").read_text(encoding="utf-8")


def test_no_key_is_bound_twice_and_every_tool_has_one_key():
    assert keymap.problems() == []
    keys = [k for b in keymap.BINDINGS for k in b.keys]
    assert len(keys) == len(set(keys))
    assert keymap.tools() == ["select", "brush", "eraser", "polygon", "box", "keypoint", "assist", "wand"]
    assert all(len(b.keys) == 1 for b in keymap.BINDINGS if b.action.startswith(keymap.TOOL_PREFIX))


def test_the_help_lists_every_binding_with_its_keys():
    help_ = label_tab.SHORTCUTS
    rows = [line for line in help_.splitlines() if line.startswith("| `")]
    for b in keymap.BINDINGS:
        row = next((r for r in rows if all(f"`{keymap.display(k)}`" in r for k in b.keys)), None)
        assert row is not None, f"the help has no row for {b.keys}"
        what = b.help.split(":")[0] if b.action.startswith(keymap.TOOL_PREFIX) else b.help
        assert what in row, b
    assert len(rows) == len(keymap.BINDINGS) + sum(m.startswith("`") for m, _ in keymap.MOUSE)
    assert "`Shift+R`" in help_ and "`Backspace`" in help_ and "`0`" in help_  # (1 picks a class now)


def test_the_page_keys_click_buttons_of_the_label_tab_from_the_same_table():
    script = label_tab.HOTKEYS_JS
    source = Path(label_tab.__file__).read_text(encoding="utf-8")
    for b in keymap.BINDINGS:
        if b.button:
            assert f'elem_id="{b.button}"' in source, b.button
            for k in b.keys:
                assert f'"{k}": "{b.button}"' in script
    # one keymap: Backspace deletes on the page as on the canvas (they used to disagree)
    assert '"Backspace": "btn-delete"' in script and '"Delete": "btn-delete"' in script


def test_the_canvas_acts_on_keys_only_through_the_table():
    assert "const KEYMAP = " in canvas.JS and canvas.JS.index("const KEYMAP") < canvas.JS.index("const BINDINGS")
    # no key compared by name outside the table (keyId names a press; BINDINGS looks it up)
    assert not re.search(r"\bkey\s*===?\s*['\"]", JS), re.search(r".{40}\bkey\s*===?\s*['\"].{20}", JS)
    assert not re.search(r"\b(k|key)\s*===?\s*'", JS)
    named = {b.action for b in keymap.BINDINGS}
    body = JS[JS.index("const ACTIONS = {"):JS.index("\n};", JS.index("const ACTIONS = {"))]
    actions = set(re.findall(r"^  (\w+): ", body, re.M))
    tool_keys = set()
    for block in re.findall(r"keys: \{\n(.*?)\n  \},", JS, re.S):
        tool_keys |= set(re.findall(r"^    (\w+)\(", block, re.M))
    assert actions and tool_keys >= {"commit", "cancel", "smaller", "larger"}
    assert actions | tool_keys <= named, (actions | tool_keys) - named  # every key the canvas handles is in the table
    canvas_actions = {b.action for b in keymap.BINDINGS if b.canvas and not b.action.startswith(keymap.TOOL_PREFIX)}
    assert canvas_actions <= actions | tool_keys, canvas_actions - actions - tool_keys
