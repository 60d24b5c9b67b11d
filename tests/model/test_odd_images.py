"""Images the model cannot look at never stop the rest (issue 19): a 1 x 100000 strip, a 100000 x 1 one, a
labeled 5000 x 2 image, a media file gone missing. Import refuses such shapes now, so each is written straight
into the store as an older release let it in (tests/helpers.legacy_image). Proposals (``propose --all``, a
worker, the background proposer), assist, fine-tuning and the held-out evaluation skip each one with its
reason recorded on the image and go on with the rest; the reason is cleared when the image is used again.
One tiny model trained for one iteration (CPU) serves every test here."""

from __future__ import annotations

import contextlib
import io
import random
import uuid

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from torchvision.models.detection.transform import GeneralizedRCNNTransform

import app
from annotator.background import BackgroundProposer
from db import annotations
from db.categories import all_categories
from db.errors import UserError
from model import api
from model.build import resize_problem
from model.data import is_heldout, labeled_samples
from model.demo import fill_demo
from model.options import ModelOptions
from model.predict import Predictor, propose
from tests.helpers import legacy_image
from tests.stores import cli_args

OPTIONS = ModelOptions(weights="none", device="cpu")
SHRUNK = "the model shrinks it to"


def _cli(store, *args) -> tuple[int, str]:
    """app.py in this process (torch is loaded already): its exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = app.main([*cli_args(store.settings), "--weights", "none", "--device", "cpu", *args])
    return code, out.getvalue()


def _free_id(store, heldout: bool) -> int:
    """An unused image id in the held-out split (or the training split)."""
    taken = set(annotations.image_ids(store))
    return next(i for i in range(900_001, 901_000) if is_heldout(i) == heldout and i not in taken)


def _problem(store, image_id: int) -> str | None:
    return annotations.images(store, [image_id])[image_id].problem


@pytest.fixture(scope="module")
def odd(tmp_path_factory, store_factory):
    """A demo store (48 px images, 3 labeled for training) holding labeled images the model cannot use, a
    tiny model fine-tuned on it by ``app.py train`` (one iteration), and what that printed."""
    st = store_factory(tmp_path_factory.mktemp("odd"))
    fill_demo(st, n_images=12, labeled_train=3, size=48, seed=3)  # ids 11 and 12 are held out
    cat = all_categories(st)[0].id
    used_before = labeled_samples(st, heldout=False)[0].image_id
    annotations.record_problems(st, {used_before: "a problem an older run met"})
    ids = {
        "wide": legacy_image(st, 5000, 2, status="done", category_id=cat, name="wide.png",
                             image_id=_free_id(st, heldout=False)),
        "tall_heldout": legacy_image(st, 1, 3000, status="done", category_id=cat, name="tall.png",
                                     image_id=_free_id(st, heldout=True)),
        "gone": legacy_image(st, 48, 48, status="done", category_id=cat, name="gone.png", media=False,
                             image_id=_free_id(st, heldout=False)),
        "used_before": used_before,
    }
    code, printed = _cli(st, "train", "--size", "tiny", "--epochs", "1")
    yield st, ids, code, printed
    store_factory.release(st)


def test_the_resize_check_agrees_with_torchvision():
    """model.build.resize_problem says 'cannot' exactly where torchvision's transform fails, about the limit."""
    rng = random.Random(0)
    for min_size, max_size in ((112, 192), (80, 192), (800, 1333)):
        t = GeneralizedRCNNTransform(min_size, max_size, [0.0] * 3, [1.0] * 3).eval()
        sizes = [(s, n) for s in (1, 2, 3) for n in range(s * max_size - 2, s * max_size + 3)]
        sizes += [(rng.randint(1, 4), rng.randint(1, 5 * max_size)) for _ in range(30)]
        for h, w in sizes + [(w, h) for h, w in sizes]:
            try:
                t([torch.zeros(3, h, w)])
                works = True
            except RuntimeError as e:
                assert "Input and output sizes should be greater than 0" in str(e)
                works = False
            assert works == (resize_problem((min_size,), max_size, h, w) is None), (min_size, max_size, h, w)


def test_train_leaves_out_each_image_it_cannot_use_names_it_and_records_why(odd):
    st, ids, code, printed = odd
    assert code == 1, printed  # something was skipped, and said
    assert "promoted to active" in printed and api.active_version(st) is not None
    wide, tall, gone = ids["wide"], ids["tall_heldout"], ids["gone"]
    assert f"skipped: image {wide} (wide.png): 5000x2: {SHRUNK} 192x0 pixels" in printed
    assert f"skipped: image {tall} (tall.png): 1x3000: {SHRUNK} 0x" in printed  # held out: not evaluated
    assert f"skipped: image {gone} (gone.png): its media file is missing" in printed  # found by the loader
    assert "3 image(s) left out, each with its reason recorded" in printed
    assert SHRUNK in _problem(st, wide) and SHRUNK in _problem(st, tall)
    assert "missing" in _problem(st, gone)
    assert _problem(st, ids["used_before"]) is None  # trained on this time: the old problem is cleared
    assert annotations.images(st, [wide])[wide].status == "done"  # its labels are as they were
    v = api.active_version(st)
    assert v.images_used == 3 and v.metrics["heldout_images"] == 2  # the demo's: 3 to train on, 2 held out


def test_propose_all_skips_odd_images_with_their_reasons_and_proposes_on_the_rest(odd):
    st, _, _, _ = odd
    thin = legacy_image(st, 1, 100000)
    flat = legacy_image(st, 100000, 1)
    gone = legacy_image(st, 40, 40, media=False, name="gone_new.png")
    normal = legacy_image(st, 40, 44, name="fine.png")
    annotations.record_problems(st, {normal: "a problem an older run met"})
    todo = api.images_to_propose(st)
    code, printed = _cli(st, "propose", "--all", "--min-score", "0")
    assert code == 1, printed
    assert f"skipped: image {thin} (legacy_1x100000.png): 1x100000: {SHRUNK} 0x191 pixels" in printed
    assert f"skipped: image {flat} (legacy_100000x1.png): 100000x1: {SHRUNK} 191x0 pixels" in printed
    assert f"skipped: image {gone} (gone_new.png): its media file is missing" in printed
    assert f"on {len(todo) - 3} image(s)" in printed
    for i in (thin, flat, gone):
        assert _problem(st, i) and annotations.images(st, [i])[i].status == "new"
    assert _problem(st, normal) is None  # proposals written: whatever was recorded before is past
    assert annotations.images(st, [normal])[normal].status == "proposed"
    assert sum(1 for line in printed.splitlines() if line.startswith("skipped: ")) == 3
    code, printed = _cli(st, "stats")
    assert code == 0 and f"  #{thin} legacy_1x100000.png: 1x100000: {SHRUNK}" in printed


def test_a_worker_never_stops_on_an_image_and_does_not_claim_it_again(odd):
    st, _, _, _ = odd
    version = api.active_version(st).id
    wide = legacy_image(st, 3000, 2, name="w3000.png")
    normal = legacy_image(st, 44, 40, name="w_ok.png")
    code, printed = _cli(st, "propose", "--worker", "--once", "--claim", "4", "--name", "w1", "--min-score", "0")
    assert code == 1, printed
    assert f"worker w1: skipped: image {wide} (w3000.png): 3000x2: {SHRUNK}" in printed
    assert f"worker w1: proposed on image(s) {normal}:" in printed
    assert "1 skipped (named above)" in printed
    assert SHRUNK in _problem(st, wide)
    assert annotations.claim_images(st, "w2", version, 50, 600) == []  # looked at by this version: not again
    assert wide in annotations.claim_images(st, "w3", version + 1000, 50, 600)  # another version tries again


def test_one_image_the_network_fails_on_is_skipped_alone_and_a_broken_model_still_stops(odd):
    st, _, _, _ = odd
    bad = legacy_image(st, 43, 41, name="poison.png")
    good = [legacy_image(st, 40 + k, 48, name=f"ok{k}.png") for k in range(3)]
    pred = Predictor.for_version(st, OPTIONS)
    real = pred.predict

    def flaky(pixels, min_score=None, sizes=None):
        if any(p.shape[:2] == (41, 43) for p in pixels):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(pixels, min_score, sizes)

    pred.predict = flaky
    r = propose(st, [good[0], bad, *good[1:]], pred, min_score=0.0, chunk=4)
    assert list(r["skipped"]) == [bad] and "RuntimeError: CUDA error" in r["skipped"][bad]
    assert "the model failed on it" in _problem(st, bad)
    assert r["proposals"] > 0 and all(_problem(st, i) is None for i in good)

    def broken(pixels, min_score=None, sizes=None):
        raise RuntimeError("the device is gone")

    pred.predict = broken
    with pytest.raises(RuntimeError, match="the device is gone"):  # every image fails: the model, not them
        propose(st, good, pred, min_score=0.0, chunk=4)
    assert all(_problem(st, i) is None for i in good)


def test_the_background_proposer_skips_an_odd_image_says_so_once_and_does_not_queue_it_again(odd):
    st, _, _, _ = odd
    thin = legacy_image(st, 2, 1000, name="bg_thin.png")
    bg = BackgroundProposer(st, OPTIONS, min_score=0.0)
    bg.want([thin])
    assert bg.wait_idle(60)
    assert bg.last_error.startswith(f"background proposals skipped image {thin}: 2x1000: {SHRUNK}")
    assert SHRUNK in _problem(st, thin)
    bg.want([thin])  # a problem is recorded: not tried in the background again
    assert bg._queue.unfinished_tasks == 0
    with pytest.raises(UserError, match=f"the model cannot use image {thin}, so it proposed nothing: 2x1000"):
        bg.propose_now(thin)  # "Propose again" tries, and says why not


def test_assist_on_an_image_the_model_cannot_use_says_why_and_records_it(odd):
    st, ids, _, _ = odd
    helper = api.assistant(st, OPTIONS)
    thin = legacy_image(st, 1, 5000, name="assist_thin.png")
    with pytest.raises(UserError, match=f"the model cannot use image {thin}: 1x5000: {SHRUNK}"):
        api.assist_box(st, helper, thin, [0, 0, 1, 100])
    assert SHRUNK in _problem(st, thin)
    gone = legacy_image(st, 40, 40, media=False, name="assist_gone.png")
    with pytest.raises(UserError, match="its media file is missing"):
        api.assist_point(st, helper, gone, 5, 5)
    assert "missing" in _problem(st, gone)
    ok = legacy_image(st, 40, 40, name="assist_ok.png")
    annotations.record_problems(st, {ok: "a problem an older run met"})
    api.assist_features(st, helper, ok)
    assert _problem(st, ok) is None  # the model looked at it: cleared
    assert np.isfinite(api.assist_box(st, helper, ok, [5, 5, 30, 30])["score"])


# (width, height): strips both ways round, about the tiny model's 192:1 limit
SHAPES = hs.tuples(hs.sampled_from([1, 2, 3, 8, 9, 40]), hs.sampled_from([1, 100, 191, 192, 193, 400, 3000])
                   ).flatmap(lambda sl: hs.sampled_from([sl, sl[::-1]]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=hs.lists(SHAPES, min_size=1, max_size=3))
def test_propose_on_any_shapes_never_fails_and_skips_exactly_those_the_model_cannot_look_at(odd, shapes):
    store, _, _, _ = odd
    pred = Predictor.for_version(store, OPTIONS)
    ids = [legacy_image(store, w, h, name=f"fuzz_{uuid.uuid4().hex}.png") for w, h in shapes]
    r = propose(store, ids, pred, min_score=0.5, chunk=2)
    cannot = {i for i, (w, h) in zip(ids, shapes) if pred.input_problem(h, w)}
    assert set(r["skipped"]) == cannot
    for i, (w, h) in zip(ids, shapes):
        assert (_problem(store, i) is not None) == (i in cannot)
        assert (i in cannot) == (max(w, h) > 192 * min(w, h))  # the tiny model takes up to 192:1


@settings(max_examples=10, deadline=None)
@given(shape=SHAPES)
def test_training_on_any_shape_the_check_lets_through_runs(shape):
    """What model.train.usable_samples keeps, the network trains on (a box label over its middle): the check
    is the whole story of odd shapes in training."""
    from db.instances import Instances
    from model.build import build
    from model.categories import CategoryMap
    from model.config import TINY
    from model.convert import targets_from_instances
    from model.data import Sample
    from model.train import usable_samples

    w, h = shape
    cmap = CategoryMap((1,), ("thing",), ((),))
    inst = Instances(h, w)
    inst.add(1, [w / 4, h / 4, max(1.0, w / 2), max(1.0, h / 2)])
    skipped: dict[int, str] = {}
    kept = usable_samples([Sample(1, "unused", w, h, inst)], TINY.min_size_train, TINY.max_size, skipped)
    assert bool(kept) != bool(skipped)
    if not kept:
        assert SHRUNK in skipped[1]
        return
    torch.manual_seed(0)
    net = build(TINY, cmap).train()
    losses = net([torch.rand(3, h, w)], [targets_from_instances(inst, cmap)])
    assert all(torch.isfinite(v) for v in losses.values())
