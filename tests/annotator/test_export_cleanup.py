"""UI exports keep at most the latest export on disk, and none once the app closes; Gradio's own copies
are cleaned by its delete_cache schedule."""

import tempfile
from pathlib import Path

import pytest
from gradio_client import Client

from annotator import store_view
from db.coco_import import import_coco
from tests.annotator.conftest import free_port


def _folders(parent: Path) -> list[Path]:
    return sorted(parent.glob("maskloop-export-*"))


def test_two_exports_in_a_row_leave_one_folder(store, synth_dir, tmp_path):
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    exports = store_view.ExportFolder(tmp_path)
    first = exports.prepare(store, with_images=True, include_proposals=False)
    second = exports.prepare(store, with_images=True, include_proposals=False)
    assert _folders(tmp_path) == [Path(second).parent] and not Path(first).exists()
    exports.close()
    assert _folders(tmp_path) == []


def test_a_yolo_export_is_one_zip_in_the_folder_and_says_what_it_left_out(store, synth_dir, tmp_path):
    import zipfile

    import_coco(store, synth_dir / "annotations.json", synth_dir)
    exports = store_view.ExportFolder(tmp_path)
    got = Path(exports.prepare(store, with_images=False, include_proposals=False, fmt="yolo"))
    assert got.name == "yolo_dataset.zip" and [p.name for p in got.parent.iterdir()] == [got.name]
    with zipfile.ZipFile(got) as z:
        assert "data.yaml" in z.namelist() and sum(n.startswith("images/") for n in z.namelist()) == 12
    assert exports.notes == []  # nothing left out of the synthetic store
    exports.close()


@pytest.fixture
def app_in_temp(store, synth_dir, tmp_path, monkeypatch):
    from annotator.server import launch

    import_coco(store, synth_dir / "annotations.json", synth_dir)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp puts export folders
    port = free_port()
    demo = launch(store, port=port, block=False)
    yield demo, f"http://127.0.0.1:{port}/", tmp_path
    demo.close()


def test_ui_exports_keep_only_the_latest_and_closing_removes_it(app_in_temp):
    demo, url, parent = app_in_temp
    assert demo.delete_cache  # Gradio's copies of downloads and uploads are cleaned on a schedule
    client = Client(url, verbose=False, download_files=False)
    for _ in range(2):
        client.predict(True, False, False, api_name="/export")
    assert len(_folders(parent)) == 1
    demo.close()
    assert _folders(parent) == []
