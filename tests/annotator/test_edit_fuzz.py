"""Property-based fuzzing of the labeling edits: any sequence of canvas edit messages (right and wrong ops,
any field values) is applied or refused with a UserError naming the problem; a refused message changes
nothing; the session stays drawable (its payload builds) and saves, and what is saved reads back."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from annotator import canvas
from annotator.labeling import LabelSession
from db.coco_import import import_coco
from db.errors import UserError
from db.schema import Annotation
from model.synthetic import write_coco

NUMBER = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2 ** 64, 2 ** 64)
          | st.sampled_from([0, 1, 2, 5, 30, 60, 95, -1, 1e9]))
VALUE = NUMBER | st.none() | st.booleans() | st.text(max_size=6) | st.lists(NUMBER, max_size=5)
POINTS = st.lists(st.lists(NUMBER, min_size=2, max_size=2) | VALUE, max_size=8)
MESSAGES = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(canvas.OPS) + ["fly", "", "save"])},
    optional={"index": st.integers(-2, 8) | VALUE, "category": st.sampled_from([1, 3, 5, 9, 4]) | VALUE,
              "points": POINTS, "radius": NUMBER, "erase": st.booleans(), "mode": st.sampled_from(
                  ["new", "add", "subtract", "auto", None, "x"]), "box": st.lists(NUMBER, max_size=5) | VALUE,
              "x": NUMBER, "y": NUMBER, "v": st.integers(-1, 3) | VALUE, "name": st.sampled_from(
                  ["nose", "left_eye", "nope"]) | VALUE, "part": st.integers(-1, 3), "vertex": st.integers(-1, 9),
              "min_score": NUMBER})

@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz-src")
    write_coco(d, 3, size=96, seed=2)
    return d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(MESSAGES, min_size=1, max_size=12))
def test_any_sequence_of_edit_messages_is_applied_or_refused_and_the_labels_still_save(store_factory, src, messages):
    with tempfile.TemporaryDirectory() as tmp:
        store = store_factory(Path(tmp) / "s")
        try:
            import_coco(store, src / "annotations.json", src, as_proposals=True)
            ls = LabelSession(store, 1)
            for msg in messages:
                before = (ls.instances.take(list(range(len(ls.instances)))).to_coco(1), ls.dirty)
                try:
                    canvas.apply(ls, msg, None)
                except UserError as e:
                    assert str(e).strip()
                    after = (ls.instances.take(list(range(len(ls.instances)))).to_coco(1), ls.dirty)
                    assert after == before, f"refused {msg} but the labels changed"
                canvas.payload(ls)  # still drawable
            if ls.dirty:
                ls.save("fuzz")
            with store.session() as s:
                rows = s.scalars(select(Annotation).where(Annotation.image_id == 1)).all()
            again = LabelSession(store, 1)
            assert len(again.instances) == len(rows) == sum(1 for d in ls.instances.deleted if not d)
            assert not again.broken  # every saved row decodes
        finally:
            store_factory.release(store)
