from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.store import Settings, Store
from model.synthetic import write_coco


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(Settings(store_dir=tmp_path / "store"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """12 synthetic images with exact masks and person keypoints, plus annotations.json."""
    d = tmp_path_factory.mktemp("synth")
    write_coco(d, 12, size=96, seed=1)
    return d


@pytest.fixture
def synth_coco(synth_dir: Path) -> dict:
    return json.loads((synth_dir / "annotations.json").read_text())
