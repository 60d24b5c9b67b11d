"""The model view's data without a browser: job progress as every browser sees it, verdict, tables."""

import pytest

from db import jobs
from db.schema import ModelVersion
from annotator import model_view


def test_job_panel_reads_the_job_row(store):
    assert "No fine-tune has run yet" in model_view.job_panel(store)["markdown"]
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "running", "starting")
    jobs.report(store, jid, 0.5, "iteration 5/10, loss 1.234, ETA 1 min 12 s",
                {"iteration": 5, "total": 10, "losses": {"loss_mask": 0.5}, "eta": 72.0, "curve": [[1, 2.0], [5, 1.2]]})
    p = model_view.job_panel(store)
    assert p["state"] == "running" and p["percent"] == 50.0
    assert p["markdown"].count("ETA") == 1 and "ETA 1 min 12 s" in p["markdown"] and "mask 0.500" in p["markdown"]
    assert '<progress value="50.0" max="100"' in model_view.progress_html(p["percent"])
    assert list(p["curve"]["loss"]) == [2.0, 1.2]
    assert "already running" in model_view.start(store, 1, 1, "tiny")
    assert "cancel requested" in model_view.cancel_latest(store)
    assert jobs.get(store, jid).cancel_requested


def test_orphaned_job_is_marked_failed(store):
    jid = jobs.create(store, "train", {})
    jobs.set_state(store, jid, "running", "training", pid=2**22 + 12345)  # no such process
    assert model_view.job_panel(store)["state"] == "failed"
    assert "ended without finishing" in jobs.get(store, jid).message


def test_verdict_and_version_tables(store):
    with store.transaction() as s:
        s.add(ModelVersion(size="tiny", checkpoint="a.pt", metrics={"bbox": 0.2, "segm": 0.3},
                           is_active=False, promoted=True))
        s.add(ModelVersion(size="tiny", checkpoint="b.pt", parent_id=1, metrics={"bbox": 0.25, "segm": 0.4},
                           parent_metrics={"bbox": 0.2, "segm": 0.3}, is_active=True, promoted=True))
    text = model_view.version_verdict(store, 2)
    assert "segm AP 0.400 (active before: 0.300)" in text and "promoted to active" in text
    rows = model_view.version_rows(store)
    assert rows[1][0] == 2 and rows[1][1] == "*" and rows[1][6] == 0.4
    ap = model_view.ap_frame(store)
    assert set(ap["metric"]) == {"bbox", "segm"} and len(ap) == 4
    assert sorted(set(ap["version"])) == ["v1", "v2"]  # names on the axis, never "1.5"
    assert [model_view.version_label(v, 2) for v in (2, 10)] == ["v02", "v10"]  # sorted as names, in order
    assert "Enter a version" in model_view.activate_version(store, None)
    assert "no model version 9" in model_view.activate_version(store, 9)


def test_the_panel_follows_this_pages_job_and_names_another_one_running(store):
    mine = jobs.create(store, "train", {})
    jobs.set_state(store, mine, "done", "finished")
    other = jobs.create(store, "train", {})  # e.g. `app.py train` started afterwards
    jobs.set_state(store, other, "running", "iteration 3/40")
    p = model_view.job_panel(store, mine)
    assert p["markdown"].startswith(f"**Job {mine}: done**") and p["state"] == "done"
    assert f"Another fine-tune is running: job {other} (iteration 3/40)" in p["markdown"]
    assert model_view.job_panel(store)["markdown"].startswith(f"**Job {other}: running**")  # no job of its own


def test_an_empty_corrections_plot_says_why(store):
    from db.stats import review_stats

    frame = model_view.corrections_frame(review_stats(store))
    assert len(frame) == 0 and "fills in once images with **model proposals**" in model_view.corrections_note(frame)


def test_a_fine_tune_with_nothing_to_train_on_is_refused_before_a_job_starts(store):
    text, job = model_view.start_job(store, 1, None, "tiny")
    assert job is None and "no categories" in text and jobs.latest(store, "train") is None


def test_a_failed_job_shows_the_escaped_tail_of_its_log(store):
    jid = jobs.create(store, "train", {})
    log = model_view.api.job_log(store, jid)
    log.parent.mkdir(parents=True)
    filler = "x" * 200  # more than the bytes read: only the file's tail is read
    log.write_text("".join(f"line {k} {filler}\n" for k in range(100))
                   + "Traceback (most recent call last):\n  File \"train.py\", line 3\n"
                   + "".join(f"step {k}\n" for k in range(12)) + "ValueError: <img src=x onerror=alert(1)>\n")
    jobs.set_state(store, jid, "running", "training")
    assert "<pre>" not in model_view.job_panel(store)["markdown"]  # only a failed job shows its log
    jobs.set_state(store, jid, "failed", "the job's process (4242) ended without finishing")
    text = model_view.job_panel(store)["markdown"]
    shown = text.split("<pre>", 1)[1].split("</pre>", 1)[0].splitlines()
    assert len(shown) == model_view.api.LOG_TAIL_LINES == 15
    assert shown[:2] == ["Traceback (most recent call last):", '  File "train.py", line 3']  # indentation kept
    assert shown[-1] == "ValueError: &lt;img src=x onerror=alert(1)&gt;" and "<img" not in text
    assert text.startswith(f"**Job {jid}: failed**") and f"jobs/job-{jid}.log" in text


def test_the_log_tail_reads_only_the_end_of_a_large_log(store, monkeypatch):
    jid = jobs.create(store, "train", {})
    log = model_view.api.job_log(store, jid)
    log.parent.mkdir(parents=True)
    log.write_bytes(b"y" * 5_000_000 + b"\nthe end \xff\n")  # (a byte that is not UTF-8 is shown, not fatal)
    read = []

    def counting_open(*a, **k):
        f = open(*a, **k)
        whole = f.read
        f.read = lambda n=-1: read.append(n) or whole(n)
        return f

    monkeypatch.setattr(model_view.api, "open", counting_open, raising=False)  # (the module's own open)
    assert model_view.api.job_log_tail(store, jid) == ["the end \ufffd"]
    assert read == [model_view.api.LOG_TAIL_BYTES]
    assert model_view.api.job_log_tail(store, jid + 1) == []  # no log (a job from the command line)


def test_who_did_what_shows_each_labeler_and_day_of_the_last_days(store):
    from tests.db.test_labeler_stats import DAY1, DAY2, two_labelers_two_days

    two_labelers_two_days(store)
    assert len(model_view.LABELER_HEADERS) == len(model_view.labeler_rows(store, today=DAY2)[0])
    assert model_view.labeler_rows(store, today=DAY2) == [
        ["2026-03-02", "alice", 1, 5.0, 0, "", 1, "100%"],
        ["2026-03-02", "bob", 1, 40.0, 0, "", 0, ""],
        ["2026-03-01", "alice", 2, 45.0, 3, "33%", 4, "75%"],
        ["2026-03-01", "bob", 1, 20.0, 1, "100%", 2, "0%"]]
    assert [r[0] for r in model_view.labeler_rows(store, days=1, today=DAY2)] == ["2026-03-02"] * 2
    assert model_view.labeler_rows(store, today=DAY1 + (DAY2 - DAY1) * 40) == []  # all older than 30 days


def test_a_fine_tune_with_no_held_out_labels_says_what_to_do(store):
    """A small store's first fine-tunes have nothing held out to be judged on and are never promoted by
    themselves: the verdict names what to label (or import), computed from the store, and the button to use
    the version anyway."""
    from db.annotations import heldout_split, is_heldout
    from db.schema import Category
    from tests.helpers import legacy_image

    with store.transaction() as s:
        s.add(Category(id=7, name="widget"))
        s.add(ModelVersion(id=1, size="full", checkpoint="coco", is_active=True, promoted=True))
        s.add(ModelVersion(id=2, size="full", checkpoint="b.pt", parent_id=1, metrics={"heldout_images": 0},
                           promoted=False, note="no held-out labels to compare it with the active version on"))

    def image(i, **kw):  # ids given: a sequence is not moved on by them (PostgreSQL)
        legacy_image(store, 8, 8, name=f"im{i}.png", media=False, image_id=i, **kw)

    for i in range(1, 5):
        image(i, status="done", category_id=7)
    assert [i for i in range(1, 14) if is_heldout(i)] == [11, 12, 13]  # the split's rule, by id
    text = model_view.version_verdict(store, 2)
    assert text.startswith("Version 2 was **not promoted: there are no held-out labels to compare it with")
    assert ("None of the store's 4 image(s) is held out to compare versions on (one in five is, chosen by its id): "
            "import at least 7 more image(s), so that image **11** exists and is held out") in text
    assert text.endswith("Or use version 2 now: type **2** under *Version* below and click **Make active**.")

    for i in range(5, 14):
        image(i)
    split = heldout_split(store)
    assert (split.labeled, [im.id for im in split.to_label], split.images, split.last_id) == (0, [11, 12, 13], 13, 13)
    text = model_view.version_verdict(store, 2)
    assert (r"Label and save at least one of image **11** (im11\.png), image **12** (im12\.png), image **13** "
            r"(im13\.png) (type its id under *Image id* in the Label tab and click *Open*), then fine-tune again") in text

    image(24, status="done", category_id=7)  # a held-out image labeled since
    with store.transaction() as s:
        s.get(ModelVersion, 1).is_active, s.get(ModelVersion, 2).is_active = False, True
    text = model_view.version_verdict(store, 2)
    assert "1 held-out image(s) have labels now: fine-tune again" in text
    assert text.endswith("Version 2 has been made active since.") and "Make active" not in text
    with store.transaction() as s:  # a version measured on held-out labels keeps its verdict
        s.add(ModelVersion(id=3, size="full", checkpoint="c.pt", parent_id=1, metrics={"segm": 0.2, "bbox": 0.3},
                           parent_metrics={"segm": 0.25}, promoted=False))
    assert "not promoted: the active model is at least as good" in model_view.version_verdict(store, 3)


def test_the_fine_tune_form_trains_for_the_minutes_when_epochs_are_blank():
    from db.errors import UserError
    from annotator.model_view import _whole

    assert _whole(None) is None and _whole("") is None and _whole(0) is None  # blank: the minutes decide
    assert _whole(3.0) == 3
    with pytest.raises(UserError, match="whole number"):
        _whole(2.5)


def test_the_seconds_plot_axis_holds_one_version_inside_it_with_round_ticks():
    import pandas as pd

    frame = lambda *v: pd.DataFrame([(f"v{i}", s) for i, s in enumerate(v, 1)], columns=["version", "seconds per image"])
    assert model_view.seconds_axis(frame(12.3)) == [0, 20]  # 12.3 * 1.2 = 14.76: up to the next 10
    assert model_view.seconds_axis(frame(12.3, 95.0)) == [0, 200]
    assert model_view.seconds_axis(frame(0.4)) == [0, 0.5]
    assert model_view.seconds_axis(frame()) == [0, 10] and model_view.seconds_axis(frame(float("nan"))) == [0, 10]
