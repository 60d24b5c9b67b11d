from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from db.migrate import current_revision, head_revision, upgrade
from db.schema import Base
from db.store import Settings, Store


def test_migrations_build_exactly_the_schema(store):
    assert current_revision(store.engine) == head_revision(store.engine)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_reopening_an_existing_store_keeps_data_and_is_idempotent(tmp_path, synth_dir):
    from db.coco_import import import_coco
    from db.stats import stats

    s1 = Store(Settings(store_dir=tmp_path / "st"))
    import_coco(s1, synth_dir / "annotations.json", synth_dir)
    s1.close()
    s2 = Store(Settings(store_dir=tmp_path / "st"))
    upgrade(s2.engine)
    assert stats(s2).images == 12


def test_sqlite_runs_with_wal_foreign_keys_and_busy_timeout(store):
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    assert {"categories", "images", "annotations", "model_versions", "jobs"} <= set(inspect(store.engine).get_table_names())
