"""The one validator per kind of value that edit messages, HTTP routes and form fields go through, and the
edit operations' declared fields (annotator.canvas.OPS)."""

import math

import pytest

from annotator import canvas, messages
from annotator.messages import Field, fields, whole, whole_text
from db.errors import UserError


@pytest.mark.parametrize("good, value", [(3, 3), (3.0, 3), (-2, -2), (2 ** 70, 2 ** 70)])
def test_whole_takes_integers_and_integral_floats(good, value):
    assert whole(good, "n") == value and type(whole(good, "n")) is int


@pytest.mark.parametrize("bad", [True, False, 1.5, math.nan, math.inf, -math.inf, "3", None, [3], {"n": 3}])
def test_whole_refuses_everything_else_by_name(bad):
    with pytest.raises(UserError, match=r"^image id .* is not an integer$"):
        whole(bad, "image id")


def test_a_value_shown_in_a_message_is_cut_short():
    with pytest.raises(UserError) as e:
        whole("y" * 10_000, "image id")
    assert len(str(e.value)) < 100


def test_id_fields_are_blank_or_a_whole_number_a_database_can_hold():
    assert whole_text("", "image id") is None and whole_text("  ", "image id") is None and whole_text(None, "x") is None
    assert whole_text(" 12 ", "image id") == 12 and whole_text(3.0, "version") == 3 and whole_text("7", "v") == 7
    for bad in ("abc", "1.5", "1e400", "nan", str(2 ** 63), True, [1]):
        with pytest.raises(UserError, match="is not a whole number"):
            whole_text(bad, "image id")


@pytest.mark.parametrize("kind, bad, says", [
    (messages.number, math.nan, "x nan is not a finite number"),
    (messages.number, True, "x True is not a finite number"),
    (messages.box, [1, 2, 3], r"x must be \[x0, y0, x1, y1\]"),
    (messages.box, [1, 2, 3, math.inf], "x inf is not a finite number"),
    (messages.flag, 1, "x 1 is not true or false"),
    (messages.text, b"bytes", "is not text"),
    (messages.one_of("add", "subtract"), "xor", "x 'xor' is not add or subtract"),
    (messages.whole_in(0, 2), 3, "x 3 is not 0 to 2"),
    (messages.whole_in(0, 2), True, "x True is not an integer"),
    (messages.points_upto(3), [[1, 2]] * 4, "x must be a list of 1 to 3 points"),
    (messages.points_upto(3), [], "x must be a list of 1 to 3 points"),
    (messages.points_upto(3), [[1, 2, 3]], r"is not an \[x, y\] point"),
])
def test_each_kind_refuses_by_name(kind, bad, says):
    with pytest.raises(UserError, match=says):
        kind(bad, "x")


def test_fields_checks_every_declared_field_and_fills_optional_ones():
    spec = {"index": messages.INT, "category": messages.INT.opt, "erase": messages.FLAG.or_(False)}
    assert fields(spec, {"index": 2.0, "seq": "anything: not declared, not read"}) == \
        {"index": 2, "category": None, "erase": False}
    with pytest.raises(UserError, match="edit message: index None is not an integer"):
        fields(spec, {})
    with pytest.raises(UserError, match="edit message: category 'a' is not an integer"):
        fields(spec, {"index": 1, "category": "a"})


def test_every_edit_operation_declares_its_fields_with_the_shared_kinds():
    for op, spec in canvas.OPS.items():
        assert callable(spec.run), op
        for name, f in spec.fields.items():
            assert isinstance(f, Field) and callable(f.check), (op, name)


def test_each_operation_says_what_it_costs_of_the_edit_rate():
    """An operation's cost sits next to its fields (canvas.OPS): a click a tenth of a unit, the model or a save a
    unit, painting in proportion to the pixels it may cover; a malformed message a tenth (refused later)."""
    assert canvas.cost({"op": "accept", "index": 0}) == 0.1 and canvas.cost({"op": "save"}) == 1.0
    assert canvas.cost({"op": "assist", "box": [0, 0, 5, 5]}) == 1.0 and canvas.cost("save") == 0.1
    big = {"op": "polygon", "points": [[0, 0], [4000, 0], [4000, 3000]], "mode": "new", "category": 1}
    assert canvas.cost(big) == pytest.approx(0.1 + 4000 * 3000 / 1e7)
    assert canvas.cost({"op": "polygon", "points": [[0, math.nan]]}) == 0.1
    assert canvas.cost({"op": "polygon", "points": 7}) == 0.1 and canvas.cost({"op": "fly"}) == 0.1
    for op in canvas.OPS.values():
        c = op.cost({}) if callable(op.cost) else op.cost
        assert 0.1 <= c <= 1.0  # (an empty message: each cost function reads leniently)
