"""The command line as a user runs it: exit codes and messages, never a traceback for a mistake."""

import json
import subprocess
import sys
from pathlib import Path

from db import annotations
from tests.stores import cli_args

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_import_export_stats_cycle(make_store, tmp_path, synth_dir):
    st = cli_args(make_store.settings(tmp_path / "st"))  # a new store: app.py makes it
    r = run("import-coco", str(synth_dir / "annotations.json"), "--images", str(synth_dir), *st)
    assert r.returncode == 0, r.stderr
    r = run(*st, "stats")
    assert r.returncode == 0 and "done       12" in r.stdout
    out = tmp_path / "o.json"
    r = run("export-coco", str(out), *st, "--polygons")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(out.read_text())["images"]) == 12


def test_export_yolo_and_its_mistakes(make_store, tmp_path, synth_dir):
    """``export --format yolo`` writes the dataset; a folder holding files, or a COCO-only option, is refused by
    name with exit 2 and nothing written; ``export --format coco`` is what ``export-coco`` was."""
    st = cli_args(make_store.settings(tmp_path / "st"))
    assert run("import-coco", str(synth_dir / "annotations.json"), "--images", str(synth_dir), *st).returncode == 0
    out = tmp_path / "yolo"
    r = run("export", "--format", "yolo", str(out), *st)
    assert r.returncode == 0, r.stderr
    assert "YOLO seg, 12 image(s)" in r.stdout and (out / "data.yaml").is_file()
    assert len(list((out / "labels").iterdir())) == 12
    r = run("export", "--format", "yolo", str(out), *st)
    assert r.returncode == 2 and "holds files already" in r.stderr and "Traceback" not in r.stderr
    r = run("export", "--format", "yolo", "--polygons", str(tmp_path / "y2"), *st)
    assert r.returncode == 2 and "--polygons: not an option of --format yolo" in r.stderr
    assert not (tmp_path / "y2").exists()
    r = run("export", "--format", "coco", str(tmp_path / "c.json"), "--polygons", *st)
    assert r.returncode == 0 and "stayed RLE" in r.stdout  # the synthetic people's holes


def test_stats_by_user_prints_one_row_per_labeler_and_day_newest_first(make_store, tmp_path):
    from tests.db.test_labeler_stats import two_labelers_two_days

    store = make_store(tmp_path / "st")
    two_labelers_two_days(store)
    store.close()
    r = run(*cli_args(store.settings), "stats", "--by-user")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:5]] == [["2026-03-02", "alice"], ["2026-03-02", "bob"],
                                                         ["2026-03-01", "alice"], ["2026-03-01", "bob"]]
    assert lines[0].split()[:3] == ["day", "(UTC)", "labeler"] and lines[3].split()[2:] == ["2", "45.0", "3", "33%",
                                                                                          "4", "75%"]
    r = run(*cli_args(store.settings), "stats", "--by-user", "--since", "2026-03-02")
    assert r.returncode == 0 and [line.split()[0] for line in r.stdout.splitlines()[1:-1]] == ["2026-03-02"] * 2
    r = run(*cli_args(store.settings), "stats", "--by-user", "--until", "March 1st")
    assert r.returncode == 2 and "'March 1st' is not a day (YYYY-MM-DD)" in r.stderr


def test_user_mistakes_exit_nonzero_without_traceback(make_store, tmp_path, synth_dir):
    st = cli_args(make_store.settings(tmp_path / "st"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [{"id": 1}], "categories": []}')
    r = run("import-coco", str(bad), "--images", str(synth_dir), *st)
    assert r.returncode == 2 and "annotation id 1" in r.stderr and "Traceback" not in r.stderr
    r = run("import-coco", str(tmp_path / "missing.json"), "--images", str(synth_dir), *st)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.png").write_bytes(b"junk")
    r = run("import-images", str(tmp_path / "junk.png"), str(synth_dir / "synth_000001.png"), *st)
    assert r.returncode == 1 and "junk.png: not an image" in r.stdout and "imported 1 image(s)" in r.stdout


def test_propose_that_finds_nothing_says_why_and_what_to_do(make_store, tmp_path):
    from model.demo import fill_demo
    from model.train import TrainOptions, fine_tune

    store = make_store(tmp_path / "s")
    fill_demo(store, n_images=12, labeled_train=6, size=64, seed=3)
    fine_tune(store, TrainOptions(epochs=1, max_minutes=0.02, size="tiny"))  # a model that has seen little
    store.close()
    r = run(*cli_args(store.settings), "--weights", "none", "propose", "--all", "--min-score", "0.9999")
    assert r.returncode == 0, r.stderr
    assert "wrote 0 proposal(s)" in r.stdout and "no detection scored --min-score 0.9999 or more" in r.stdout
    assert "held-out mask AP is" in r.stdout and "stay in the 'to label' queue" in r.stdout
    from db import annotations

    store = make_store.open(store.settings)
    assert annotations.image_ids(store, "proposed") == []  # nothing to review: they stay new
    assert set(annotations.image_ids(store, "new")) == set(annotations.queue(store))


def test_train_in_a_log_prints_progress_lines_and_a_refusal_comes_first(make_store, tmp_path):
    from db import jobs
    from model.demo import fill_demo

    st = tmp_path / "st"
    store = make_store(st)
    fill_demo(store, n_images=12, labeled_train=8, size=64, seed=1)
    r = run(*cli_args(store.settings), "train", "--size", "tiny", "--epochs", "1")  # output to a pipe, as in a log
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("fine-tuning for 1 epoch(s)")
    assert "reading the labels: iteration 0/0" in r.stderr and "training: iteration 2/2" in r.stderr
    assert "evaluating:" in r.stderr and "verdict:" in r.stdout
    other = jobs.create(store, "train", {})  # e.g. a fine-tune started in the UI
    jobs.set_state(store, other, "running", "iteration 3/40")
    r = run(*cli_args(store.settings), "train", "--size", "tiny", "--epochs", "1")
    assert r.returncode == 2 and "already running" in r.stderr and "fine-tuning for" not in r.stderr


def test_two_proposal_workers_share_a_store_without_proposing_an_image_twice(make_store, tmp_path, synth_dir):
    """Two `propose --worker --once` processes at once on one store: every image is proposed on by exactly
    one of them."""
    import re

    from db import annotations
    from db.ingest import ingest
    from model.train import TrainOptions, fine_tune
    from PIL import Image as PILImage

    settings = make_store.settings(tmp_path / "st")
    assert run("import-coco", str(synth_dir / "annotations.json"), "--images", str(synth_dir),
               *cli_args(settings)).returncode == 0
    store = make_store.open(settings)
    fine_tune(store, TrainOptions(size="tiny", epochs=1, device="cpu", promote="always"))
    src = tmp_path / "new"
    src.mkdir()
    for k in range(12):
        PILImage.new("RGB", (48, 40), (k * 20, 90, 30)).save(src / f"n{k}.png")
    new = {i for i, _ in ingest(store, [src]).added}
    store.close()
    args = [sys.executable, str(ROOT / "app.py"), *cli_args(settings), "propose", "--worker", "--once", "--claim", "2",
            "--device", "cpu", "--min-score", "0"]
    procs = [subprocess.Popen(args + ["--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("w1", "w2")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    by_worker = [[int(i) for line in out.splitlines() if ": proposed on image(s) " in line
                  for i in re.findall(r"\d+", line.split("image(s) ")[1].split(":")[0])] for out, _ in outs]
    every = by_worker[0] + by_worker[1]
    assert sorted(every) == sorted(new)  # each new image once (the imported ones are done)
    store = make_store.open(settings)
    assert annotations.claim_images(store, "w3", 1, 50, 600) == []  # nothing left for this version
    store.close()


def test_assign_hands_images_to_a_labeler_and_imports_wait_for_review_only_when_asked(make_store, tmp_path,
                                                                                       synth_dir):
    settings = make_store.settings(tmp_path / "st")
    st = cli_args(settings)
    r = run("import-coco", str(synth_dir / "annotations.json"), "--images", str(synth_dir), "--needs-review", *st)
    assert r.returncode == 0, r.stderr
    store = make_store.open(settings)
    every = annotations.image_ids(store)
    assert annotations.queue(store, annotations.TO_REVIEW) == sorted(every, reverse=True)  # asked: all wait
    r = run("assign", "leo", "--ids", f"{every[0]},{every[1]}-{every[2]}", *st)
    assert r.returncode == 0 and "assigned 3 image(s) to leo" in r.stdout, r.stderr
    r = run("assign", "--list", *st)
    assert "leo: 0 open, 3 assigned (3 done)" in r.stdout
    for bad, why in ((["ana", "--ids", "4,x"], "'x' is neither an id"), (["ana", "--category", "unicorn"],
                     "no category named 'unicorn'"), (["ana"], "which images?")):
        r = run("assign", *bad, *st)
        assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("assign", "--clear", "leo", *st)
    assert r.returncode == 0 and "took back 3" in r.stdout


def test_texts_and_paths_over_the_store_limits_exit_2_or_are_skipped_alike_on_every_database(make_store, tmp_path):
    """On PostgreSQL a 300-character category name made import-coco exit 1 with a DataError traceback, and a
    path over 1000 characters made import-images lose its whole batch; SQLite stored both. Now: exit 2 naming
    the problem, and the file skipped by name with the rest imported, on both."""
    from PIL import Image

    st = cli_args(make_store.settings(tmp_path / "st"))
    src = tmp_path / "src"
    deep = src / "/".join(["d" * 200] * 5)
    deep.mkdir(parents=True)
    Image.new("RGB", (9, 9), (1, 2, 3)).save(deep / "far.png")
    Image.new("RGB", (9, 9), (4, 5, 6)).save(src / "near.png")
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "near.png", "width": 9, "height": 9}],
                                "annotations": [], "categories": [{"id": 1, "name": "x" * 300}]}))
    r = run("import-coco", str(coco), "--images", str(src), *st)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "category id 1: field 'name'" in r.stderr and "300 characters long, over the store's limit of 200" in r.stderr
    r = run("import-images", str(src), *st)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "imported 1 image(s)" in r.stdout and "far.png: its name is 1012 characters long" in r.stdout


def test_the_maskloop_console_script_runs_the_same_commands_as_app_py(make_store, tmp_path):
    """pip installs a ``maskloop`` command next to the interpreter (pyproject's [project.scripts])."""
    import shutil

    exe = shutil.which("maskloop", path=str(Path(sys.executable).parent))
    assert exe, "no maskloop command next to the interpreter: pip install -e . makes it"
    st = cli_args(make_store.settings(tmp_path / "s"))
    got = subprocess.run([exe, *st, "stats"], capture_output=True, text=True, timeout=120)
    via_app = run(*st, "stats")
    assert got.returncode == via_app.returncode == 0, got.stderr
    assert got.stdout == via_app.stdout and "images" in got.stdout
    helped = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.stdout.startswith("usage: maskloop ") and "export" in helped.stdout
