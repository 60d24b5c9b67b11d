"""The background proposer, and the queue order it proposes in (db.annotations.queue)."""

import time

from sqlalchemy import select, update

from annotator.background import BackgroundProposer
from db import annotations
from db.coco_import import import_coco
from db.schema import Annotation, Image


def test_the_default_queue_is_a_fixed_shuffle_of_every_image_not_done(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    with store.transaction() as s:
        s.execute(update(Image).where(Image.id == 7).values(status="done"))
    q = annotations.queue(store)
    assert sorted(q) == [i for i in range(1, 13) if i != 7]
    assert q != sorted(q) and q == annotations.queue(store)  # shuffled, and the same order each time
    with store.transaction() as s:
        s.execute(update(Image).where(Image.id == q[0]).values(status="done"))
    assert annotations.queue(store) == q[1:]  # an image done leaves the order of the rest as it was


def test_queue_puts_unlabeled_first_most_uncertain_first(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    scores = {1: 0.9, 2: 0.52, 3: 0.3, 4: 0.45}
    with store.transaction() as s:
        for iid, sc in scores.items():
            s.execute(update(Annotation).where(Annotation.image_id == iid).values(score=sc))
        s.execute(update(Annotation).where(Annotation.image_id.in_([5, 6])).values(score=None))
        s.execute(update(Image).where(Image.id == 7).values(status="done"))
    q = annotations.queue(store, annotations.UNCERTAIN_FIRST)
    assert q[:4] == [2, 4, 3, 1]  # |mean - 0.5|: 0.02, 0.05, 0.2, 0.4
    assert 7 not in q and {5, 6} <= set(q[4:])
    assert annotations.queue(store, "done") == [7]


def test_background_proposer_fills_the_next_images(make_store, tmp_path):
    from model.demo import fill_demo
    from model.train import TrainOptions, fine_tune

    st = make_store(tmp_path / "bg")
    fill_demo(st, n_images=16, labeled_train=6, size=64, seed=2)
    fine_tune(st, TrainOptions(epochs=1, size="tiny"))
    with st.session() as s:
        new = list(s.scalars(select(Image.id).where(Image.status == "new").order_by(Image.id)))[:2]
    bp = BackgroundProposer(st, min_score=0.0)
    bp.want(new)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with st.session() as s:
            statuses = set(s.scalars(select(Image.status).where(Image.id.in_(new))))
        if statuses == {"proposed"}:
            break
        time.sleep(0.2)
    assert statuses == {"proposed"}, bp.last_error
    with st.session() as s:
        n = s.scalar(select(Annotation.id).where(Annotation.image_id == new[0], Annotation.source == "model"))
    assert n is not None
