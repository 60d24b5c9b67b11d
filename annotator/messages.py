"""Values that arrive from outside (the canvas's edit messages, the HTTP routes' arguments, the form fields),
checked by one validator per kind of value: one integer check, one finite-number check, one point list, one
box, one piece of text. Each refuses with a UserError naming the field and the value it got.

An edit message's fields are declared where its operation is (``annotator.canvas.OPS``), as a mapping of field
name to ``Field``; ``fields(spec, message)`` checks them all and answers the typed values (optional fields
absent or null are None). Fields a message carries that its operation does not declare (the canvas's ``seq``,
``token``) are not read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from db.errors import UserError

ID_LIMIT = 2 ** 63  # a number typed into an id field is refused at this size: no database id is that large


def _shown(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def whole(value: Any, what: str) -> int:
    """An integer (JSON clients may send 3.0): not a bool, not NaN or infinite, not a fraction. (Its range is
    the caller's: an index names the instance it misses, an image id the ids there are.)"""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise UserError(f"{what} {_shown(value)} is not an integer")
    return int(value)


def whole_text(text: Any, what: str) -> int | None:
    """A whole number typed into a text field: None when blank (Gradio's Number shows 0 when empty, so id fields
    are text), else ``whole`` of it."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text) if isinstance(text, str) else text
        if abs(whole(value, what)) < ID_LIMIT:
            return int(value)
    except (UserError, ValueError):
        pass
    raise UserError(f"{what} {_shown(text)} is not a whole number")


def number(value: Any, what: str) -> float:
    """A finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{what} {_shown(value)} is not a finite number")
    return float(value)


def points(value: Any, what: str, limit: int) -> list[tuple[float, float]]:
    """A list of 1 to ``limit`` [x, y] points of finite numbers."""
    if not isinstance(value, list) or not value or len(value) > limit:
        raise UserError(f"{what} must be a list of 1 to {limit} points")
    out = []
    for p in value:
        if not (isinstance(p, (list, tuple)) and len(p) == 2):
            raise UserError(f"{what}: {_shown(p)} is not an [x, y] point")
        out.append((number(p[0], f"{what}: x"), number(p[1], f"{what}: y")))
    return out


def box(value: Any, what: str) -> list[float]:
    """[x0, y0, x1, y1] of finite numbers."""
    if not isinstance(value, list) or len(value) != 4:
        raise UserError(f"{what} must be [x0, y0, x1, y1]")
    return [number(v, what) for v in value]


def text(value: Any, what: str, limit: int = 10_000) -> str:
    if not isinstance(value, str):
        raise UserError(f"{what} {_shown(value)} is not text")
    if len(value) > limit:
        raise UserError(f"{what} is {len(value):,} characters long; at most {limit:,}")
    return value


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{what} {_shown(value)} is not true or false")
    return value


@dataclass(frozen=True)
class Field:
    """One field of an edit message: how it is checked, and whether it may be left out (then None, or
    ``default``)."""
    check: Callable[[Any, str], Any]
    optional: bool = False
    default: Any = None

    @property
    def opt(self) -> Field:
        return Field(self.check, True, self.default)

    def or_(self, default: Any) -> Field:
        return Field(self.check, True, default)


def one_of(*values: Any) -> Callable[[Any, str], Any]:
    def check(value: Any, what: str) -> Any:
        if isinstance(value, bool) or value not in values:  # (True == 1: a bool is not a choice)
            raise UserError(f"{what} {_shown(value)} is not {', '.join(map(str, values[:-1]))} or {values[-1]}")
        return value
    return check


def whole_in(lo: int, hi: int) -> Callable[[Any, str], int]:
    def check(value: Any, what: str) -> int:
        v = whole(value, what)
        if not lo <= v <= hi:
            raise UserError(f"{what} {v} is not {lo} to {hi}")
        return v
    return check


def points_upto(limit: int) -> Callable[[Any, str], Any]:
    return lambda value, what: points(value, what, limit)


INT = Field(whole)
NUM = Field(number)
BOX = Field(box)
TEXT = Field(text)
FLAG = Field(flag)


def fields(spec: dict[str, Field], message: dict) -> dict[str, Any]:
    """The message's declared fields, each checked by its kind ("edit message: <field> ..." on a bad one)."""
    out = {}
    for key, f in spec.items():
        value = message.get(key)
        if value is None and f.optional:
            out[key] = f.default
        else:
            out[key] = f.check(value, f"edit message: {key}")
    return out
