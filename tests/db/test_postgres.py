"""The same store code against PostgreSQL (--db URL), whatever MASKLOOP_TEST_DB says: where the whole suite
runs on SQLite, these still cover PostgreSQL. Runs where MASKLOOP_TEST_POSTGRES_URL names a database on a
PostgreSQL server (the tests make a database of their own there for each store and drop it afterwards;
.ci/run starts a local server and sets it); CI requires it."""

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from annotator.labeling import LabelSession, SaveConflict
from db import coco_export
from db.coco_import import import_coco
from db.stats import stats
from db.store import Settings, Store
from tests import stores

if not stores.postgres_server():  # raises where MASKLOOP_REQUIRE_POSTGRES (CI) or MASKLOOP_TEST_DB asks for one
    pytest.skip("set MASKLOOP_TEST_POSTGRES_URL to a PostgreSQL database to run these", allow_module_level=True)


@pytest.fixture
def pg_store(make_store, tmp_path):
    return make_store(tmp_path / "media-only", backend="postgresql")


def test_round_trip_and_conflict_on_postgres(pg_store, make_store, synth_dir, tmp_path):
    """The export from PostgreSQL is byte for byte the one from SQLite (a SQLite store on purpose)."""
    assert pg_store.engine.dialect.name == "postgresql"
    import_coco(pg_store, synth_dir / "annotations.json", synth_dir)
    assert stats(pg_store).images == 12
    a = tmp_path / "a.json"
    coco_export.export(pg_store, a)
    sqlite = make_store(tmp_path / "sq", backend="sqlite")
    import_coco(sqlite, synth_dir / "annotations.json", synth_dir)
    assert a.read_bytes() == coco_export.dumps(coco_export.build(sqlite))  # same bytes from either database
    one, two = LabelSession(pg_store, 1), LabelSession(pg_store, 1)
    one.reject(0)
    one.save("alice")
    two.accept(0)
    with pytest.raises(SaveConflict):
        two.save("bob")


def test_ids_come_from_sequences_moved_past_imported_ids(pg_store, synth_dir, tmp_path):
    """After a COCO import with given ids, new images, categories and labels get fresh ids (issue 7)."""
    import json

    import numpy as np
    from PIL import Image

    from db import categories
    from db.ingest import ingest

    coco = json.loads((synth_dir / "annotations.json").read_text())
    import_coco(pg_store, coco, synth_dir)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "new.png")
    r = ingest(pg_store, [tmp_path / "new.png"])
    assert not r.skipped and r.added[0][0] > max(im["id"] for im in coco["images"])
    assert categories.add(pg_store, "fresh") > max(c["id"] for c in coco["categories"])
    ls = LabelSession(pg_store, r.added[0][0])
    m = np.zeros((8, 8), bool)
    m[1:4, 1:4] = True
    ls.new_instance(coco["categories"][0]["id"], mask=m)
    ls.save("alice")
    assert ls.instances[-1].ann_id > max(a["id"] for a in coco["annotations"])


def _concurrent_worker(url: str, store_dir: str, role: str, image_ids: list[int], out) -> None:
    """One process of the two-process test: writes proposals again and again, or reviews every image."""
    from tests.db.test_annotations import _version, proposals_for, review_until_saved

    st = Store(Settings(store_dir=Path(store_dir), db_url=url))
    try:
        if role == "proposer":
            version = _version(st)
            for k in range(4):
                for i in image_ids:
                    from db import annotations

                    annotations.write_proposals(st, i, proposals_for(st, i, k), version)
            out.put(("proposer", {}))
        else:
            out.put(("reviewer", {i: sorted(review_until_saved(st, i, "alice")) for i in image_ids}))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put(("error", repr(e)))
    finally:
        st.close()


def test_two_processes_propose_and_review_at_once_on_postgres(pg_store, synth_dir, tmp_path):
    """Issue 8: two processes writing proposals and saving reviews on one PostgreSQL store."""
    import multiprocessing as mp

    from db import annotations
    from tests.db.test_annotations import assert_saves_kept

    import_coco(pg_store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    ids = annotations.image_ids(pg_store)[:8]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker, args=(pg_store.settings.db_url, str(pg_store.settings.store_dir),
                                                          role, ids, out))
             for role in ("proposer", "reviewer")]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert not [r for r in results if r[0] == "error"], results
    saved = next(r[1] for r in results if r[0] == "reviewer")
    assert_saves_kept(pg_store, {int(k): set(v) for k, v in saved.items()})


def test_one_training_job_at_a_time_on_postgres(pg_store):
    from db import jobs

    jid = jobs.create(pg_store, "train", {})
    with pytest.raises(jobs.JobRunning, match=f"job {jid}"):
        jobs.create(pg_store, "train", {})
    jobs.set_state(pg_store, jid, "cancelled", "stopped")


def test_workers_claim_disjoint_images_on_postgres(pg_store, tmp_path):
    """FOR UPDATE SKIP LOCKED: concurrent claims take different images, none waits for another."""
    from tests.db.test_annotations import _unlabeled, claim_until_none_left

    ids = _unlabeled(pg_store, tmp_path, 30)
    got = claim_until_none_left(pg_store, [f"w{k}" for k in range(4)], 2)
    every = [i for v in got.values() for i in v]
    assert sorted(every) == sorted(ids)


def test_a_store_made_by_the_first_release_upgrades_on_postgres(make_store, tmp_path):
    """The same upgrade from migration 0001, with data in it, on PostgreSQL."""
    from db.migrate import current_revision, head_revision, upgrade
    from tests.db.test_migrate import _first_release_store

    settings = make_store.settings(tmp_path, backend="postgresql")
    engine = create_engine(settings.db_url)
    _first_release_store(engine, settings.media_dir)
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    old = make_store.open(settings, migrate=False)
    coco = coco_export.build(old)
    assert [a["id"] for a in coco["annotations"]] == [11]
    from db.ingest import ingest
    from PIL import Image as PILImage

    (tmp_path / "in").mkdir()
    PILImage.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "in" / "n.png")
    (added,) = ingest(old, [tmp_path / "in"]).added
    assert added[0] > 3  # ids still come from the (upgraded) sequences
    old.close()
    engine.dispose()
