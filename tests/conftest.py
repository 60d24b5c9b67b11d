from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.store import Store
from model.synthetic import write_coco
from tests import stores

# A test whose fixtures include one of these opens stores through tests/stores.py: it is marked ``uses_store``
# and runs again in the PostgreSQL pass (``MASKLOOP_TEST_DB=postgresql pytest -m "uses_store and not sqlite"``).
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


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """12 synthetic images with exact masks and person keypoints, plus annotations.json."""
    d = tmp_path_factory.mktemp("synth")
    write_coco(d, 12, size=96, seed=1)
    return d


@pytest.fixture
def synth_coco(synth_dir: Path) -> dict:
    return json.loads((synth_dir / "annotations.json").read_text())
