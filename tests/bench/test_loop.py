"""The loop benchmark's simulated labeler: its effort accounting on hand-made cases, and a --quick run."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from bench import loop
from bench.loop import BOX_S, CLICK_S, DRAW_S, Seen, Truth, plan_image

pytestmark = pytest.mark.model_only  # not in the PostgreSQL pass: a model's data, tested elsewhere on it


def _square(x0, y0, side, size=64):
    m = np.zeros((size, size), bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def test_a_perfect_proposal_costs_one_accept():
    t = Truth(2, _square(10, 10, 20))
    plan = plan_image([Seen(2, t.mask.copy(), score=0.9, index=0)], [t], assist=None)
    assert plan.effort == loop.Effort(pixels=0, keypoints=0, actions=1, seconds=CLICK_S)
    assert [s[0] for s in plan.steps] == ["accept"] and plan.accepted_unchanged == 1


def test_a_shifted_mask_costs_exactly_the_symmetric_difference():
    t = Truth(2, _square(10, 10, 20))
    shifted = _square(14, 10, 20)  # IoU 320/480 = 0.67: corrected, not accepted as it is
    plan = plan_image([Seen(2, shifted, score=0.9, index=0)], [t], assist=None)
    px = int(np.count_nonzero(shifted ^ t.mask))
    assert px == 160
    assert plan.effort.pixels == px and plan.effort.actions == 2  # the accept and one repaint
    assert plan.effort.seconds == pytest.approx(CLICK_S + DRAW_S * px / t.area)
    assert [s[0] for s in plan.steps] == ["fix"] and plan.accepted_unchanged == 0


def test_a_missed_object_costs_its_pixels_and_a_false_positive_one_reject():
    t = Truth(4, _square(5, 5, 12))
    elsewhere = Seen(4, _square(40, 40, 10), score=0.8, index=3)
    plan = plan_image([elsewhere], [t], assist=None)
    assert plan.effort.pixels == t.area == 144
    assert plan.effort.seconds == pytest.approx(DRAW_S + CLICK_S) and plan.effort.actions == 2
    assert [s[0] for s in plan.steps] == ["reject", "draw"]


def test_the_wrong_class_costs_a_click_and_keypoints_out_of_tolerance_one_each():
    kp = [20.0, 10.0, 2, 12.0, 20.0, 2, 28.0, 20.0, 2, 20.0, 30.0, 2]
    t = Truth(1, _square(10, 10, 20), kp)
    one_off = list(kp)
    one_off[0] = 35.0  # the tip 15 px off, far outside its tolerance: OKS 0.75, still accepted as it is
    plan = plan_image([Seen(1, t.mask.copy(), one_off, score=0.9, index=0)], [t], assist=None)
    assert plan.accepted_unchanged == 1 and plan.effort.keypoints == 0
    two_off = list(one_off)
    two_off[10] = 45.0  # and the tail: OKS 0.5, so both are moved
    plan = plan_image([Seen(1, t.mask.copy(), two_off, score=0.9, index=0)], [t], assist=None)
    assert plan.effort.keypoints == 2 and plan.effort.seconds == pytest.approx(3 * CLICK_S)
    wrong = plan_image([Seen(2, t.mask.copy(), None, score=0.9, index=0)], [t], assist=None)
    assert wrong.effort.keypoints == 4 and wrong.effort.seconds == pytest.approx(CLICK_S + CLICK_S + 4 * CLICK_S)


def test_assist_costs_a_box_and_what_is_left_to_repaint():
    t = Truth(2, _square(10, 10, 20))
    exact = plan_image([], [t], assist=lambda truth: Seen(truth.category_id, truth.mask.copy()))
    assert exact.effort.seconds == pytest.approx(BOX_S + CLICK_S) and exact.effort.pixels == 0
    assert [s[0] for s in exact.steps] == ["assist"]
    useless = plan_image([], [t], assist=lambda truth: Seen(truth.category_id, _square(50, 50, 4)))
    assert useless.effort.seconds == pytest.approx(BOX_S + CLICK_S + DRAW_S)  # the box tried, then drawn
    assert [s[0] for s in useless.steps] == ["draw"]
    bad = Seen(2, _square(15, 10, 20), score=0.9, index=0)  # IoU 0.6: a box on the object does better
    replaced = plan_image([bad], [t], assist=lambda truth: Seen(truth.category_id, truth.mask.copy()))
    assert [s[0] for s in replaced.steps] == ["replace"]
    assert replaced.effort.seconds == pytest.approx(BOX_S + 2 * CLICK_S)


def test_quick_run_writes_the_report_and_its_plots(make_store, tmp_path, monkeypatch):
    """The benchmark's stores are opened on the tests' database (MASKLOOP_TEST_DB)."""
    monkeypatch.setattr(loop, "Store", lambda s: make_store.open(
        dataclasses.replace(s, db_url=make_store.settings(s.store_dir).db_url)))
    out = tmp_path / "loop.md"
    assert loop.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    for heading in ("## Against the targets", "## Per round (the default queue: a fixed shuffle)",
                    "## Per round (queue: most uncertain first)", "## Fine-tunes", "## Reading the product's measures"):
        assert heading in text
    results = json.loads((tmp_path / "loop" / "results.json").read_text())
    assert set(results) == {"shuffled", "uncertainty"}
    for arm in results.values():
        assert [r["round"] for r in arm["rounds"]] == [1, 2] and all(r["images"] == 4 for r in arm["rounds"])
        assert arm["rounds"][0]["version"] is None and arm["rounds"][1]["version"] is not None
        assert arm["rounds"][0]["effort"] == arm["rounds"][0]["unassisted"]  # round 1: no model, all drawn
        assert sum(s["images"] for s in arm["reviews"]) >= 8  # the product's review rows saw every save
    assert results["shuffled"]["rounds"][1]["fixed"] is not None
    for name in ("effort.png", "ap.png"):
        with Image.open(tmp_path / "loop" / name) as im:
            assert im.size == (720, 420)
    # the report again from the saved results, without running: the same tables
    again = tmp_path / "again.md"
    assert loop.main(["--quick", "--from", str(tmp_path / "loop" / "results.json"), "--out", str(again)]) == 0
    cut = text.index("## Per round (the default queue: a fixed shuffle)")
    redone = again.read_text().replace("](again/", "](loop/")  # (its plots beside it)
    assert redone[redone.index("## Per round (the default"):] == text[cut:]


def _round(k, seconds, unassisted, segm, train=None):
    return {"round": k, "effort": {"seconds": seconds}, "unassisted": {"seconds": unassisted},
            "test": {} if segm is None else {"segm": segm}, **({"train": train} if train else {})}


def _train(version, promoted, worse=False, missed=False):
    return {"version": version, "promoted": promoted, "worse": worse, "missed": missed}


def test_the_targets_over_seeds_count_every_seed():
    runs = {
        0: {"shuffled": {"rounds": [_round(1, 100, 100, None, _train(1, True)),
                                    _round(2, 50, 100, 0.2, _train(2, True)), _round(3, 20, 100, 0.3)]}},
        1: {"shuffled": {"rounds": [_round(1, 100, 100, None, _train(1, True)),
                                    _round(2, 60, 100, 0.25, _train(2, False, missed=True)),
                                    _round(3, 30, 100, 0.25)]}},
    }
    text = "\n".join(loop.over_seeds(runs))
    assert "## Over 2 seeds" in text
    assert "0.250 ± 0.071 (0.200 to 0.300)" in text  # last-round effort 0.2 and 0.3 of unassisted
    assert "rising in every round that had a model before it: 1 of 2 seeds" in text
    assert "Refused versions better on the test set by more than 0.02: 1 (target: none)" in text
    assert "| 1 | 0.300 | -, 0.250, 0.250 | no | 1 of 2 | none | v2 |" in text
    assert "round 2: 0.225 ± 0.035 (0.200 to 0.250)" in text
