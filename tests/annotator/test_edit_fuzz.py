"""Property-based fuzzing of the labeling edits: any sequence of canvas edit messages (right and wrong ops,
any field values) is applied or refused with a UserError naming the problem; a refused message changes
nothing; the session stays drawable (its payload builds) and saves, and what is saved reads back. With
another browser saving the image first, a save in the sequence is refused and the messages that follow act
on the refused edits (reapply, drop_mine, reapply_all, drop_all)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from annotator import canvas
from annotator.labeling import LabelSession, SaveConflict
from db.coco_import import import_coco
from db.errors import UserError
from db.schema import Annotation
from model.synthetic import write_coco
from tests.annotator.pages import page_of

NUMBER = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2 ** 64, 2 ** 64)
          | st.sampled_from([0, 1, 2, 5, 30, 60, 95, -1, 1e9]))
VALUE = NUMBER | st.none() | st.booleans() | st.text(max_size=6) | st.lists(NUMBER, max_size=5)
POINTS = st.lists(st.lists(NUMBER, min_size=2, max_size=2) | VALUE, max_size=8)
ANY_OP = st.sampled_from(sorted(canvas.OPS) + ["fly", "", "save"])
REFUSED_OPS = st.sampled_from(["reapply", "drop_mine", "reapply_all", "drop_all", "undo", "redo"])  # a third
MESSAGES = st.fixed_dictionaries(
    {"op": st.one_of(ANY_OP, ANY_OP, REFUSED_OPS)},
    optional={"index": st.integers(-2, 8) | VALUE, "category": st.sampled_from([1, 3, 5, 9, 4]) | VALUE,
              "points": POINTS, "radius": NUMBER, "erase": st.booleans(), "mode": st.sampled_from(
                  ["new", "add", "subtract", "auto", None, "x"]), "box": st.lists(NUMBER, max_size=5) | VALUE,
              "x": NUMBER, "y": NUMBER, "v": st.integers(-1, 3) | VALUE, "name": st.sampled_from(
                  ["nose", "left_eye", "nope"]) | VALUE, "part": st.integers(-1, 3), "vertex": st.integers(-1, 9),
              "min_score": NUMBER, "item": st.integers(0, 3) | st.integers(-1, 12) | VALUE})

@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz-src")
    write_coco(d, 3, size=96, seed=2)
    return d


def _state(ls: LabelSession):
    return (ls.instances.take(list(range(len(ls.instances)))).to_coco(1), ls.dirty, [r.key for r in ls.pending])


def _save_what_is_left(ls: LabelSession) -> None:
    """Save what the messages left (also nothing: the session then holds what the store has); after a
    conflict, with every refused edit re-applied that can be."""
    for _ in range(3):
        if any(not ls.conflicts.blocked(r) for r in ls.pending):
            ls.conflicts.reapply_all()
        if ls.pending:
            ls.conflicts.drop_all()
        try:
            ls.save("fuzz")
            return
        except SaveConflict:
            ls.conflicts.review()
    raise AssertionError("the labels could not be saved")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(MESSAGES, min_size=1, max_size=12), other_saves_first=st.booleans())
def test_any_sequence_of_edit_messages_is_applied_or_refused_and_the_labels_still_save(store_factory, src, messages,
                                                                                       other_saves_first):
    with tempfile.TemporaryDirectory() as tmp:
        store = store_factory(Path(tmp) / "s")
        try:
            import_coco(store, src / "annotations.json", src, as_proposals=True)
            ls = LabelSession(store, 1)
            if other_saves_first:  # and this session's first save is refused: two refused edits to act on
                other = LabelSession(store, 1)
                other.reject(0)
                other.save("other")
                messages = [{"op": "accept", "index": 0}, {"op": "delete", "index": 1}, {"op": "save"}] + messages
            for msg in messages:
                before = _state(ls)
                try:
                    canvas.apply(page_of(ls), msg, None)
                except UserError as e:
                    assert str(e).strip()
                    assert _state(ls) == before, f"refused {msg} but the labels changed"
                canvas.payload(page_of(ls))  # still drawable
            _save_what_is_left(ls)
            with store.session() as s:
                rows = s.scalars(select(Annotation).where(Annotation.image_id == 1)).all()
            again = LabelSession(store, 1)
            assert len(again.instances) == len(rows) == sum(1 for d in ls.instances.deleted if not d)
            assert not again.broken  # every saved row decodes
        finally:
            store_factory.release(store)
