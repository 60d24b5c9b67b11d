"""Point-prompted assist and assist features computed in the background, against a small store with a tiny
model trained for a few seconds (CPU): plumbing and consistency with the full network, not quality."""

import threading

import numpy as np
import pytest
import torch
from sqlalchemy import select

from db.errors import UserError
from db.masks import decode, iou
from db.media import load_rgb
from db.schema import Annotation, Image, ModelVersion
from model import api, predict
from model.data import store_category_map
from model.demo import fill_demo
from model.options import ModelOptions
from model.predict import Predictor, images_to_propose
from model.train import TrainOptions, fine_tune

pytestmark = pytest.mark.model_only  # not in the PostgreSQL pass: a model's data, tested elsewhere on it

OPTIONS = ModelOptions(weights="none")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, store_factory):
    """16 synthetic 64 px images, 8 of them labeled for training, and a tiny model trained on them (30 iterations, ~12 s)."""
    st = store_factory(tmp_path_factory.mktemp("assist"))
    fill_demo(st, n_images=16, labeled_train=8, size=64, seed=3)
    fine_tune(st, TrainOptions(epochs=15, size="tiny", batch_size=4))
    yield st
    store_factory.release(st)


@pytest.fixture(scope="module")
def helper(small_store):
    return api.assistant(small_store, OPTIONS)


def _largest_object(store):
    """(image id, category id, mask) of the largest labeled object, and a pixel inside it near its middle."""
    with store.session() as s:
        a = max(s.scalars(select(Annotation).where(Annotation.review_state == "accepted")), key=lambda a: a.area)
        im = s.get(Image, a.image_id)
        mask = decode(a.segmentation, im.height, im.width)
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return a.image_id, a.category_id, mask, (float(xs[k]) + 0.5, float(ys[k]) + 0.5)


def _all_images(store) -> list[int]:
    with store.session() as s:
        return list(s.scalars(select(Image.id).order_by(Image.id)))


def _counting_backbone(monkeypatch, net) -> list:
    calls: list = []
    real = net.backbone.forward
    monkeypatch.setattr(net.backbone, "forward", lambda x: calls.append(1) or real(x))
    return calls


def test_point_on_an_object_gives_an_instance_over_it(small_store, helper):
    image_id, cat, mask, (x, y) = _largest_object(small_store)
    got = api.assist_point(small_store, helper, image_id, x, y)
    assert set(got) == {"category_id", "score", "bbox", "segmentation", "keypoints", "model_version_id"}
    assert got["category_id"] in helper.predictor.cmap.ids and 0.0 <= got["score"] <= 1.0
    m = decode(got["segmentation"], *mask.shape)
    assert (m & mask).sum() > 0  # the instance lies over the object clicked
    if m.any():
        ys, xs = np.nonzero(m)
        assert got["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    chosen = api.assist_point(small_store, helper, image_id, x, y, cat)  # the labeler's class
    assert chosen["category_id"] == cat and (decode(chosen["segmentation"], *mask.shape) & mask).sum() > 0
    with small_store.session() as s:
        assert s.query(Annotation).filter(Annotation.source == "assist").count() == 0  # nothing written


def test_point_picks_the_best_detection_of_the_full_network_covering_it(small_store, helper):
    """No score threshold: the point's answer scores at least as high as any detection of a full run (with
    no threshold) whose box covers the point, and the same detection gives the same mask."""
    image_id, _, mask, (x, y) = _largest_object(small_store)
    with small_store.session() as s:
        pix = np.asarray(load_rgb(small_store.media_file(s.get(Image, image_id).media_path)))
    full = Predictor.for_version(small_store, OPTIONS).net  # its own copy: the assist's net is left as it is
    full.roi_heads.score_thresh = 0.0
    with torch.inference_mode():
        det = full([torch.from_numpy(pix.copy()).permute(2, 0, 1).float() / 255])[0]
    b = det["boxes"]
    covering = (b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])
    assert covering.any()
    best = int(torch.argmax(torch.where(covering, det["scores"], torch.tensor(-1.0))))
    got = api.assist_point(small_store, helper, image_id, x, y)
    assert got["score"] >= float(det["scores"][best]) - 1e-5
    if abs(got["score"] - float(det["scores"][best])) < 1e-5:  # the same detection (not suppressed by NMS)
        own = (det["masks"][best, 0] > 0.5).numpy()
        assert iou(decode(got["segmentation"], *mask.shape), own) >= 0.95


def test_rpn_on_cached_features_gives_the_full_runs_proposals(small_store, helper):
    image_id = images_to_propose(small_store)[0]
    with small_store.session() as s:
        pix = np.asarray(load_rgb(small_store.media_file(s.get(Image, image_id).media_path)))
    f = helper.features(("test", image_id), lambda: pix)
    net = helper.net
    with torch.inference_mode():
        images, _ = net.transform([torch.from_numpy(pix.copy()).permute(2, 0, 1).float() / 255])
        expected = net.rpn(images, net.backbone(images.tensors))[0][0]
    assert f.padded == tuple(images.tensors.shape[-2:])
    assert torch.equal(helper.proposals(f), expected)


def test_point_on_empty_background_is_a_weak_detection_or_a_clear_message(small_store, helper):
    image_id, _, mask, _ = _largest_object(small_store)
    with small_store.session() as s:
        objects = [decode(a.segmentation, *mask.shape) for a in
                   s.scalars(select(Annotation).where(Annotation.image_id == image_id))]
    anything = np.logical_or.reduce(objects)
    ys, xs = np.mgrid[:mask.shape[0], :mask.shape[1]]
    far = [min(np.hypot(xs[anything] - cx, ys[anything] - cy)) for cx, cy in zip(xs.ravel(), ys.ravel())]
    k = int(np.argmax(far))
    x, y = float(xs.ravel()[k]) + 0.5, float(ys.ravel()[k]) + 0.5
    try:
        got = api.assist_point(small_store, helper, image_id, x, y)
    except UserError as e:
        assert f"the model sees nothing at ({x:g}, {y:g}); drag a box around the object instead" == str(e)
    else:
        assert got["score"] < 0.5


@pytest.mark.parametrize("args, says", [
    ((10 ** 6, 5, 5, None), "no image with id"),
    ((None, float("nan"), 5, None), "finite"),
    ((None, 5, float("inf"), None), "finite"),
    ((None, -1, 5, None), r"outside the 64x64 image"),
    ((None, 5, 64.5, None), r"the point \(5, 64.5\) is outside the 64x64 image"),
    ((None, "a", 5, None), "two numbers x, y"),
    ((None, None, 5, None), "two numbers x, y"),
    ((None, 5, 5, 999), "no category with id 999"),
    ((None, 5, 5, True), "category id True is not an integer"),
    (("3", 5, 5, None), "image id '3' is not an integer"),
])
def test_point_assist_refuses_bad_input_with_a_message(small_store, helper, args, says):
    image_id, x, y, cat = args
    with pytest.raises(UserError, match=says):
        api.assist_point(small_store, helper, image_id or images_to_propose(small_store)[0], x, y, cat)
    with pytest.raises(UserError, match="no model yet"):
        api.assist_point(small_store, None, images_to_propose(small_store)[0], 5, 5)


def test_warm_computes_features_that_the_assist_then_uses(small_store, monkeypatch):
    from annotator.background import BackgroundProposer

    bp = BackgroundProposer(small_store, OPTIONS)
    ids = _all_images(small_store)
    opened, following = ids[0], ids[1:4]
    assert not bp.features_ready(opened)
    bp.warm([opened, *following])
    assert bp.wait_idle(60) and bp.last_error == ""
    assert all(bp.features_ready(i) for i in [opened, *following])
    calls = _counting_backbone(monkeypatch, bp.assistant().net)
    _, _, _, (x, y) = _largest_object(small_store)
    bp.assist_box(opened, [4, 4, 40, 40])
    bp.assist_point(opened, x, y)
    assert calls == []  # both answered from the features computed in the background
    bp.assist_box(ids[5], [4, 4, 40, 40])
    assert calls == [1]  # an image not warmed has its features computed once, on demand


def test_warming_the_next_images_keeps_the_opened_one(small_store):
    from annotator.background import BackgroundProposer

    bp = BackgroundProposer(small_store, OPTIONS)
    ids = _all_images(small_store)[:8]
    for k in range(4):  # the person steps through the queue: each image opened warms it and the next three
        bp.warm(ids[k:k + 4])
        assert bp.wait_idle(60) and bp.last_error == ""
        assert all(bp.features_ready(i) for i in ids[k:k + 4])
    bp.warm(ids[4:8])  # a jump: four images not cached, and the cache already full
    assert bp.wait_idle(60)
    ready = [i for i in ids if bp.features_ready(i)]
    assert set(ids[4:8]) <= set(ready) and len(ready) <= 6  # bounded, and the opened one not evicted


def test_a_later_warm_drops_the_features_an_earlier_one_still_had_queued(small_store):
    from annotator.background import BackgroundProposer

    bp = BackgroundProposer(small_store, OPTIONS)
    a, b, c = _all_images(small_store)[-3:]
    with bp._lock:  # the background thread is busy: both requests queue up behind it
        bp.warm([a, b])
        bp.warm([c])
    assert bp.wait_idle(60) and bp.last_error == ""
    assert bp.features_ready(c) and not bp.features_ready(a) and not bp.features_ready(b)


def test_warm_without_a_fine_tuned_model_does_nothing_and_reports_nothing(store, monkeypatch):
    from annotator.background import BackgroundProposer

    fill_demo(store, n_images=4, labeled_train=2, size=64, seed=5)
    image_id = _all_images(store)[0]
    empty = BackgroundProposer(store, OPTIONS)  # no model at all
    empty.warm([image_id, 10 ** 6])
    assert empty.wait_idle(30) and empty.last_error == "" and not empty.features_ready(image_id)
    # round 0: torchvision's COCO networks, which the assist cannot prompt: refused before they are loaded
    monkeypatch.setattr(predict, "load_coco_nets", lambda *a: pytest.fail("round-0 networks loaded to be refused"))
    with store.transaction() as s:
        s.add(ModelVersion(size="full", checkpoint="coco", is_active=True, promoted=True,
                           category_map=store_category_map(store).to_dict()))
    bp = BackgroundProposer(store, OPTIONS)
    bp.warm([image_id])
    assert bp.wait_idle(30) and bp.last_error == "" and not bp.features_ready(image_id)
    with pytest.raises(UserError, match="assist needs a fine-tuned model"):
        bp.assist_point(image_id, 5, 5)


def test_assist_features_are_cached_once_under_concurrent_prompts(small_store, helper, monkeypatch):
    """Prompts from several threads on one warmed image: answered from the cache, none recomputes."""
    image_id, _, _, (x, y) = _largest_object(small_store)
    api.assist_features(small_store, helper, image_id)
    assert api.assist_features_ready(small_store, helper, image_id)
    calls = _counting_backbone(monkeypatch, helper.net)
    results, errors = [], []

    def ask():
        try:
            results.append(api.assist_point(small_store, helper, image_id, x, y)["score"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and calls == [] and len(set(results)) == 1


def test_the_proposals_and_the_assist_share_one_network(small_store):
    """The UI process held two copies of the network, one for proposals and one for the assist."""
    from annotator.background import BackgroundProposer

    bp = BackgroundProposer(small_store, OPTIONS)
    with bp.model_lock():
        helper, proposer = bp.assistant(), bp.predictor()
        assert helper.predictor is proposer and helper.net is proposer.net
        assert bp.assistant() is helper  # (and its cache) while the version stays active


def test_the_feature_cache_is_bounded_by_bytes_and_keeps_the_last_image(small_store):
    from model.assist import Assistant

    ids = _all_images(small_store)[:4]
    pred = Predictor.for_version(small_store, OPTIONS)
    one = Assistant(pred)
    f = one.features(("k", ids[0]), lambda: np.asarray(load_rgb(small_store.media_file(_media(small_store, ids[0])))))
    size = sum(t.numel() * t.element_size() for t in f.maps.values())
    assert one.cached_bytes() == size and all(t.dtype == torch.float32 for t in f.maps.values())  # (CPU: float32)
    for budget, kept in ((int(2.5 * size), 2), (0, 1)):
        helper = Assistant(pred, cache_images=6, cache_bytes=budget)
        for i in ids:
            helper.features(("k", i), lambda i=i: np.asarray(load_rgb(small_store.media_file(_media(small_store, i)))))
        assert [helper.has_features(("k", i)) for i in ids] == [False] * (4 - kept) + [True] * kept
        assert helper.cached_bytes() <= max(budget, size)


def _media(store, image_id: int) -> str:
    with store.session() as s:
        return s.get(Image, image_id).media_path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_cuda_the_assist_runs_in_fp16_and_answers_as_in_float32(small_store):
    """On a GPU: the cached maps are fp16 (half the memory) and a box gets the mask it gets in float32."""
    from model.assist import Assistant

    image_id, _, mask, _ = _largest_object(small_store)
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]
    load = lambda: np.asarray(load_rgb(small_store.media_file(_media(small_store, image_id))))  # noqa: E731
    answers = {}
    for device in ("cuda", "cpu"):
        helper = Assistant(Predictor.for_version(small_store, ModelOptions(weights="none", device=device)))
        f = helper.features(("k", image_id), load)
        assert all(t.dtype == (torch.float16 if device == "cuda" else torch.float32) for t in f.maps.values())
        inst = helper.box(("k", image_id), load, mask.shape, box)
        answers[device] = decode(inst.segmentations[0], *mask.shape)
    assert iou(answers["cuda"], answers["cpu"]) > 0.9
