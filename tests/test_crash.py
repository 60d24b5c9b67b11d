"""Kill tests: a process doing real work is SIGKILLed (from inside, at a chosen point, so the point is exact)
in the middle of a COCO import, a save of edited labels, a training run (while it trains, and while the
checkpoint is being written) and ``propose --all``. After a restart: the database's integrity check passes
(SQLite: PRAGMA integrity_check; PostgreSQL: amcheck over every table and index), every label saved before
the kill is there, nothing half-written is visible, an interrupted job shows as failed, the
active model is the one from before, and running the command again finishes the work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from db import annotations, jobs
from db.coco_import import import_coco
from db.ingest import clean_orphan_media
from db.schema import Annotation, Image, Job, ModelVersion
from db.store import Store

ROOT = Path(__file__).resolve().parents[1]

# Installed in the child before the step to interrupt: the n-th writing transaction dies after all its
# statements ran and before it commits; ``die_in_torch_save`` dies half-way through writing a checkpoint.
PRELUDE = textwrap.dedent("""
    import contextlib, os, signal, sys
    from pathlib import Path
    from db.store import Settings, Store

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def die_in_transaction(n=1):
        real, seen = Store.transaction, [0]

        @contextlib.contextmanager
        def dying(self):
            with real(self) as s:
                yield s
                s.flush()
                seen[0] += 1
                if seen[0] == n:
                    die()  # everything written, nothing committed
        Store.transaction = dying

    def die_after_call(module, name, n):  # module.name dies right after its n-th call returned
        real, seen = getattr(module, name), [0]

        def dying(*a, **k):
            out = real(*a, **k)
            seen[0] += 1
            if seen[0] == n:
                die()
            return out
        setattr(module, name, dying)

    def die_in_torch_save():
        import torch
        real = torch.save

        def half(obj, f, *a, **k):
            real(obj, f, *a, **k)
            os.truncate(f, os.path.getsize(f) // 2)
            die()
        torch.save = half

    store = Store(Settings(store_dir=Path(sys.argv[1]), db_url=os.environ["CHILD_DB_URL"] or None))
""")


def _killed(store: Store, body: str, *args: str) -> None:
    store.engine.dispose()  # the child writes; nothing of ours stays open across it
    r = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body), str(store.settings.store_dir), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "CHILD_DB_URL": store.settings.db_url or ""})
    assert r.returncode == -9, f"the child was not killed (exit {r.returncode}): {r.stderr[-2000:]}"


def _restart(store: Store) -> Store:
    """What every command does when it starts (app.py's open_store)."""
    from db.recovery import recover

    again = Store(store.settings)
    recover(again)
    _assert_intact(again)
    return again


def _assert_intact(store: Store) -> None:
    """SQLite: PRAGMA integrity_check. PostgreSQL (whose files a killed client cannot touch): amcheck's
    verify_heapam on every table and bt_index_check (every row in its indexes) on every index."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            return
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
        tables = conn.execute(text("SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                                   "AND relkind = 'r'")).scalars().all()
        indexes = conn.execute(text("SELECT c.oid FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE "
                                    "c.relnamespace = 'public'::regnamespace AND c.relkind = 'i' "
                                    "AND a.amname = 'btree'")).scalars().all()
        assert tables and indexes
        for oid in tables:
            assert conn.execute(text("SELECT * FROM verify_heapam(:t)"), {"t": oid}).all() == []
        for oid in indexes:
            conn.execute(text("SELECT bt_index_check(:i, true)"), {"i": oid})  # raises on corruption


def _count(store: Store, what) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(what))


def _media_files(store: Store) -> list[Path]:
    return sorted(p for p in store.settings.media_dir.rglob("*") if p.is_file())


def _png(path: Path, shade: int) -> None:
    from PIL import Image as PILImage

    PILImage.new("RGB", (32, 24), (shade, 40, 90)).save(path)


KILL_IMPORT = {
    "after the media files": "import db.coco_import as ci\ndie_after_call(ci, 'write_new_media', 2)\n",
    "before the rows commit": "die_in_transaction()\n",
}


@pytest.mark.parametrize("where", list(KILL_IMPORT))
def test_a_killed_coco_import_leaves_nothing_and_runs_again(store, synth_dir, where):
    import_coco(store, {"images": [], "annotations": [], "categories": [{"id": 77, "name": "kept"}]}, synth_dir)
    _killed(store, KILL_IMPORT[where] + "from db.coco_import import import_coco\n"
            "import_coco(store, Path(sys.argv[2]) / 'annotations.json', Path(sys.argv[2]))\n", str(synth_dir))
    again = _restart(store)
    assert _count(again, Image) == 0 and _count(again, Annotation) == 0  # nothing half-written is visible
    assert not _media_files(again)  # the files the killed import wrote were removed at the restart
    from db.categories import all_categories

    assert [c.id for c in all_categories(again)] == [77]  # what was there before the import is untouched
    result = import_coco(again, synth_dir / "annotations.json", synth_dir)  # running it again finishes
    assert _count(again, Image) == result["images"] == 12 and len(_media_files(again)) == 12
    again.close()


def test_a_killed_save_keeps_the_save_before_it_and_writes_nothing_of_its_own(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    image_id = annotations.image_ids(store)[0]
    _killed(store, """
        from annotator.labeling import LabelSession
        image_id = int(sys.argv[2])
        ls = LabelSession(store, image_id)
        ls.accept(0)
        ls.save("first")  # lands
        for i in range(1, len(ls.instances)):
            ls.reject(i)
        ls.new_instance(ls.instances.category_ids[0], polygon=[(1, 1), (20, 1), (20, 20)])
        die_in_transaction()
        ls.save("second")  # killed before it commits
    """, str(image_id))
    again = _restart(store)
    with again.session() as s:
        rows = s.scalars(select(Annotation).where(Annotation.image_id == image_id).order_by(Annotation.id)).all()
        im = s.get(Image, image_id)
    assert [r.review_state for r in rows][:1] == ["accepted"] and rows[0].reviewed_by == "first"
    assert all(r.review_state == "proposed" for r in rows[1:])  # none of the killed save's rejects
    assert all(r.source == "model" for r in rows)  # nor its new instance
    assert im.status == "in_review"
    from annotator.labeling import LabelSession

    ls = LabelSession(again, image_id)  # the labeler does it again: it saves
    ls.reject_rest()
    ls.save("second")
    assert annotations.images(again, [image_id])[image_id].status == "done"
    again.close()


@pytest.fixture
def trained_store(store, synth_dir):
    """A store with labels and an active tiny model (a few iterations: only the version matters here)."""
    from model.train import TrainOptions, fine_tune

    import_coco(store, synth_dir / "annotations.json", synth_dir)
    fine_tune(store, TrainOptions(size="tiny", epochs=1, device="cpu", promote="always"))
    return store


TRAIN = """
    from model.api import TrainOptions, train_job
    {kill}
    train_job(store, TrainOptions(size="tiny", epochs=3, device="cpu", promote="always"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    "import db.jobs as j\nreal = j.report\n"
    "def report(store, job_id, fraction, msg, detail=None, *a, **k):\n"
    "    if (detail or {}).get('iteration', 0) >= 2: die()\n"
    "    return real(store, job_id, fraction, msg, detail, *a, **k)\n"
    "j.report = report",
    "die_in_torch_save()",
], ids=["while training", "while writing the checkpoint"])
def test_a_killed_training_run_fails_its_job_and_keeps_the_active_model(trained_store, kill):
    store = trained_store
    with store.session() as s:
        before = s.scalar(select(ModelVersion.id).where(ModelVersion.is_active))
        versions = s.scalar(select(func.count()).select_from(ModelVersion))
    _killed(store, TRAIN.format(kill=textwrap.indent(kill, "    ").strip()))
    again = _restart(store)
    with again.session() as s:
        job = s.scalars(select(Job).order_by(Job.id.desc())).first()
        assert s.scalar(select(ModelVersion.id).where(ModelVersion.is_active)) == before
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == versions  # no half-made version
    assert job.state == "failed" and "ended without finishing" in job.message
    assert not list(again.settings.models_dir.glob("*.part"))  # no half-written checkpoint is left
    from model.api import TrainOptions, train_job

    r = train_job(again, TrainOptions(size="tiny", epochs=1, device="cpu", promote="always"))
    assert r.promoted and jobs.running(again, "train") is None
    again.close()


@pytest.mark.slow
def test_a_killed_propose_all_leaves_whole_chunks_and_runs_again(trained_store, tmp_path):
    store = trained_store
    src = tmp_path / "new"
    src.mkdir()
    for k in range(6):
        _png(src / f"n{k}.png", 20 * k)
    from db.ingest import ingest

    new_ids = [i for i, _ in ingest(store, [src]).added]
    _killed(store, """
        from model.api import ModelOptions, images_to_propose, propose_images
        from model import predict
        die_in_transaction(2)  # the first chunk commits; the second dies before it does
        ids = images_to_propose(store)
        p = predict.Predictor.for_version(store, ModelOptions(device="cpu"))
        predict.propose(store, ids, p, min_score=0.0, chunk=3)
    """)
    again = _restart(store)
    with again.session() as s:
        proposed = set(s.scalars(select(Annotation.image_id).where(Annotation.source == "model")))
        statuses = dict(s.execute(select(Image.id, Image.status).where(Image.id.in_(new_ids))).all())
    first, second = set(new_ids[:3]), set(new_ids[3:])
    assert not proposed & second  # the killed chunk wrote nothing
    assert all(statuses[i] == "new" for i in second)
    assert all(statuses[i] in ("proposed", "new") for i in first)
    from model.api import ModelOptions, images_to_propose, propose_images

    propose_images(again, images_to_propose(again), ModelOptions(device="cpu"), min_score=0.0)
    with again.session() as s:
        statuses = dict(s.execute(select(Image.id, Image.status).where(Image.id.in_(new_ids))).all())
    assert all(statuses[i] == "proposed" for i in new_ids)  # min score 0: every image gets proposals
    assert clean_orphan_media(again) == 0
    again.close()


KILL_FOLDER = {
    "after a media file of the second batch": "import db.ingest as ing\ndie_after_call(ing, 'write_new_media', 5)\n",
    "before the second batch commits": "die_in_transaction(2)\n",
}


@pytest.mark.parametrize("where", list(KILL_FOLDER))
def test_a_killed_folder_import_keeps_whole_batches_and_runs_again(store, tmp_path, where):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for k in range(7):
        _png(folder / ("sub" if k % 2 else ".") / f"p{k}.png", 10 + 30 * k)
    _killed(store, KILL_FOLDER[where] + "from db.ingest import ingest\n"
            "ingest(store, [sys.argv[2]], batch_size=3)\n", str(folder))
    again = _restart(store)
    # the first batch of 3 committed whole; nothing of the second is visible, and its files are gone
    assert _count(again, Image) == 3
    with again.session() as s:
        used = sorted(s.scalars(select(Image.media_path)))
    assert [p.relative_to(again.settings.media_dir).as_posix() for p in _media_files(again)] == used
    from db.ingest import ingest

    report = ingest(again, [folder])  # running it again finishes the work
    assert len(report.added) == 4 and len(report.duplicates) == 3 and not report.skipped
    assert _count(again, Image) == 7 and len(_media_files(again)) == 7
    again.close()
