from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.store import Settings, Store
from model.synthetic import write_coco
from tests import stores

# A test whose fixtures include one of these opens stores through tests/stores.py: it is marked ``uses_store``
# and runs again in the PostgreSQL pass:
#     MASKLOOP_TEST_DB=postgresql pytest -m "uses_store and not sqlite and not model_only"
STORE_FIXTURES = {"make_store", "store_factory"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if STORE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.uses_store)


@pytest.fixture(scope="session")
def store_factory():
    """Stores for fixtures wider than one test: they call ``store_factory.release(store)`` when they end."""
    f = stores.StoreFactory()
    yield f
    f.close()


@pytest.fixture
def make_store():
    """``make_store(folder, **settings) -> Store`` on the database of MASKLOOP_TEST_DB, each on a fresh
    database, closed (and dropped) when the test ends; ``make_store.settings(folder)`` for a store that a
    child process or app.py opens (pass ``stores.cli_args(settings)``); ``make_store.open(settings)`` to
    open one again."""
    f = stores.StoreFactory()
    yield f
    f.close()


@pytest.fixture
def store(make_store, tmp_path: Path) -> Store:
    return make_store(tmp_path / "store")


# --- every store a test opens comes from the fixtures above (or the test is marked ``sqlite``) ----------------
_opened: list[Settings] = []  # the settings of every Store opened in this process since the test's setup began


def pytest_sessionstart(session):
    real = Store.__init__

    def watched(self, settings, *a, **k):
        _opened.append(settings)
        real(self, settings, *a, **k)

    Store.__init__ = watched


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _opened.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fails a test that opens a store (in this process, or in a child under its tmp_path) that the
    PostgreSQL pass would miss: one without the store fixtures, or one left on SQLite in that pass. Runs
    right after the test, before tmp_path (deleted at teardown when the test passed) is gone."""
    result = yield
    marks = {m.name for m in item.iter_markers()}
    if "sqlite" in marks:
        return result
    tmp = item.funcargs.get("tmp_path")
    files = sorted(tmp.rglob("labels.db")) if isinstance(tmp, Path) else []
    where = [str(s.store_dir) for s in _opened] + [str(f.parent) for f in files]
    if where and "uses_store" not in marks:
        pytest.fail(f"opened a store ({', '.join(where)}) without the store fixtures of tests/conftest.py, "
                    "so the PostgreSQL pass would not run this test")
    if stores.BACKEND != "sqlite":
        stray = [str(s.store_dir) for s in _opened if s.url.startswith("sqlite")
                 and Path(s.store_dir).resolve() not in stores.EXPLICIT_SQLITE]
        stray += [str(f.parent) for f in files if f.parent.resolve() not in stores.EXPLICIT_SQLITE]
        if stray:
            pytest.fail(f"opened a SQLite store ({', '.join(stray)}) in the {stores.BACKEND} pass; use the "
                        "store fixtures, or backend='sqlite' where SQLite is meant")
    return result


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """12 synthetic images with exact masks and person keypoints, plus annotations.json."""
    d = tmp_path_factory.mktemp("synth")
    write_coco(d, 12, size=96, seed=1)
    return d


@pytest.fixture
def synth_coco(synth_dir: Path) -> dict:
    return json.loads((synth_dir / "annotations.json").read_text())
