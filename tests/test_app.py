"""The command line as a user runs it: exit codes and messages, never a traceback for a mistake."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_import_export_stats_cycle(tmp_path, synth_dir):
    st = str(tmp_path / "st")
    r = run("import-coco", str(synth_dir / "annotations.json"), "--images", str(synth_dir), "--store", st)
    assert r.returncode == 0, r.stderr
    r = run("--store", st, "stats")
    assert r.returncode == 0 and "done       12" in r.stdout
    out = tmp_path / "o.json"
    r = run("export-coco", str(out), "--store", st, "--polygons")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(out.read_text())["images"]) == 12


def test_user_mistakes_exit_nonzero_without_traceback(tmp_path, synth_dir):
    st = str(tmp_path / "st")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [{"id": 1}], "categories": []}')
    r = run("import-coco", str(bad), "--images", str(synth_dir), "--store", st)
    assert r.returncode == 2 and "annotation id 1" in r.stderr and "Traceback" not in r.stderr
    r = run("import-coco", str(tmp_path / "missing.json"), "--images", str(synth_dir), "--store", st)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.png").write_bytes(b"junk")
    r = run("import-images", str(tmp_path / "junk.png"), str(synth_dir / "synth_000001.png"), "--store", st)
    assert r.returncode == 1 and "junk.png: not an image" in r.stdout and "imported 1 image(s)" in r.stdout
