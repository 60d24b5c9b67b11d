import dataclasses

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, make_url, text

from db.migrate import current_revision, head_revision, upgrade
from db.schema import Base


def test_migrations_build_exactly_the_schema(store):
    assert current_revision(store.engine) == head_revision(store.engine)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_reopening_an_existing_store_keeps_data_and_is_idempotent(make_store, tmp_path, synth_dir):
    from db.coco_import import import_coco
    from db.stats import stats

    s1 = make_store(tmp_path / "st")
    import_coco(s1, synth_dir / "annotations.json", synth_dir)
    s1.close()
    s2 = make_store.open(s1.settings)
    upgrade(s2.engine)
    assert stats(s2).images == 12


@pytest.mark.sqlite
def test_sqlite_runs_with_wal_foreign_keys_and_busy_timeout(make_store, tmp_path):
    """About SQLite itself (its PRAGMAs): a SQLite store whatever MASKLOOP_TEST_DB says."""
    store = make_store(tmp_path / "s", backend="sqlite")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    assert {"categories", "images", "annotations", "model_versions", "jobs"} <= set(inspect(store.engine).get_table_names())


def test_a_database_url_with_percent_escapes_opens(make_store, tmp_path):
    """A percent-escape in the URL (a PostgreSQL password holding '@' is written %40; SQLite's URL escapes a
    folder named '50%') reached alembic's config parser, which failed on it at every start."""
    settings = make_store.settings(tmp_path / "50%off")
    if settings.db_url:  # PostgreSQL: an escaped "/" in a connection parameter, whatever the server's auth
        settings = dataclasses.replace(settings, db_url=settings.db_url + "?application_name=maskloop%2Ftests")
    assert "%" in make_url(settings.url).render_as_string(hide_password=False)
    st = make_store.open(settings)
    assert current_revision(st.engine) == head_revision(st.engine)


def _first_release_store(engine, media_dir):
    """A store as the first release (migration 0001) made it, with an image, a category, a label and a
    model version in it, written with that release's columns."""
    import datetime as dt

    from PIL import Image as PILImage

    upgrade(engine, "0001")
    now = dt.datetime(2026, 11, 24, 12, 0, 0)
    (media_dir / "ab").mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (20, 10), (1, 2, 3)).save(media_dir / "ab" / "abc.png")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO categories (id, name, supercategory) VALUES (7, 'blob', 'thing')"))
        conn.execute(text("INSERT INTO images (id, file_name, content_hash, media_path, width, height, status, "
                          "row_version, created_at, updated_at) VALUES (3, 'a.png', 'abc', 'ab/abc.png', 20, 10, "
                          "'done', 1, :t, :t)"), {"t": now})
        conn.execute(text("INSERT INTO model_versions (id, size, checkpoint, is_active, promoted, images_used, "
                          "train_seconds, note, created_at) VALUES (1, 'tiny', 'x.pt', :yes, :yes, 1, 2.0, '', :t)"),
                     {"t": now, "yes": True})
        conn.execute(text("INSERT INTO annotations (id, image_id, category_id, segmentation, bbox, area, iscrowd, "
                          "source, review_state, created_by, reviewed_by, created_at) VALUES (11, 3, 7, "
                          "'[[1, 1, 9, 1, 9, 8]]', '[1, 1, 8, 7]', '28', 0, 'human', 'accepted', 'ann', 'ann', :t)"),
                     {"t": now})


def test_a_store_made_by_the_first_release_upgrades_with_its_data(make_store, tmp_path):
    from db import annotations
    from db.coco_export import build
    from db.stats import review_stats

    st = make_store(tmp_path / "old", migrate=False)
    _first_release_store(st.engine, st.settings.media_dir)
    assert current_revision(st.engine) == "0001"
    upgrade(st.engine)
    assert current_revision(st.engine) == head_revision(st.engine)
    coco = build(st)
    assert [a["id"] for a in coco["annotations"]] == [11] and coco["annotations"][0]["area"] == 28
    assert [c["id"] for c in coco["categories"]] == [7] and [i["id"] for i in coco["images"]] == [3]
    assert review_stats(st) == []  # no reviews yet: the measures start with the first save
    assert annotations.claim_images(st, "w", 1, 5, 60) == []  # done images are never claimed
    new = annotations.images(st, [3])[3]
    assert new.status == "done"
    with st.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []  # the upgraded store has exactly the current schema
    st.close()


def test_a_store_with_several_active_versions_keeps_the_first_active(make_store, tmp_path):
    """Before migration 0008 every process of a torchrun fine-tune registered its own active round-0 version;
    the upgrade leaves the first active (the one the app found) and the database refuses a second."""
    import datetime as dt

    from sqlalchemy.exc import IntegrityError

    st = make_store(tmp_path / "old", migrate=False)
    upgrade(st.engine, "0007")
    now = dt.datetime(2026, 12, 1, 12, 0, 0)
    with st.engine.begin() as conn:
        for vid in (1, 2, 3):
            conn.execute(text("INSERT INTO model_versions (id, size, checkpoint, is_active, promoted, images_used, "
                              "train_seconds, note, created_at) VALUES (:id, 'full', 'coco', :yes, :yes, 0, 0.0, "
                              "'', :t)"), {"id": vid, "t": now, "yes": True})
    upgrade(st.engine)
    with st.engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM model_versions WHERE is_active = :yes ORDER BY id"),
                              {"yes": True}).scalars().all()
    assert active == [1]
    with pytest.raises(IntegrityError), st.engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET is_active = :yes WHERE id = 3"), {"yes": True})
    st.close()
