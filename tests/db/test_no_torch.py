"""The store, the synthetic data and the held-out rule need no torch (issue 8): the db tests and the demo's
data generation run without importing it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_store_synthetic_data_and_demo_filling_import_no_torch(make_store, tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from db.store import Settings, Store\n"
        "from db.annotations import is_heldout\n"
        "from model.demo import fill_demo\n"
        "from model.synthetic import make_coco\n"
        "st = Store(Settings(store_dir=Path(sys.argv[1]), db_url=sys.argv[2] or None))\n"
        "r = fill_demo(st, n_images=6, labeled_train=2, size=48)\n"
        "assert r['labeled'] >= 2, r\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch was imported'\n")
    settings = make_store.settings(tmp_path / "s")
    r = subprocess.run([sys.executable, "-c", code, str(settings.store_dir), settings.db_url or ""], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
