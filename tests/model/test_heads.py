"""The region heads: torchvision's results, with the keypoint head run only on keypoint classes."""

import types

import torch
from torchvision.models.detection.roi_heads import RoIHeads

from model import build as mb
from model.categories import CategoryMap
from model.config import TINY
from model.synthetic import CATEGORIES


def _cmap(cats):
    return CategoryMap.from_categories([types.SimpleNamespace(**{"keypoints": None, **c}) for c in cats])


def _as_torchvision(model):
    """The same network and weights with torchvision's own heads."""
    plain = mb.build(TINY, _cmap(CATEGORIES))
    plain.load_state_dict(model.state_dict())
    plain.roi_heads.__class__ = RoIHeads
    return plain


def _rois_seen_by_keypoint_head(model):
    seen = []
    model.roi_heads.keypoint_roi_pool.register_forward_hook(lambda m, args, out: seen.append(out.shape[0]))
    return seen


def test_inference_equals_torchvision_and_keypoints_run_only_on_keypoint_classes():
    torch.manual_seed(0)
    cmap = _cmap(CATEGORIES)  # one class of four (person) has keypoints
    model = mb.build(TINY, cmap).eval()
    plain = _as_torchvision(model).eval()
    mb.set_eval_size(model, TINY)
    mb.set_eval_size(plain, TINY)
    seen = _rois_seen_by_keypoint_head(model)
    images = [torch.rand(3, 96, 96), torch.rand(3, 80, 112)]
    with torch.inference_mode():
        ours, theirs = model(images), plain(images)
    person = cmap.label(next(c["id"] for c in CATEGORIES if c.get("keypoints")))
    for a, b in zip(ours, theirs):
        assert len(a["boxes"]) > 0
        for key in ("boxes", "labels", "scores", "masks"):
            assert torch.equal(a[key], b[key])
        is_person = a["labels"] == person
        assert torch.allclose(a["keypoints"][is_person], b["keypoints"][is_person])
        assert not a["keypoints"][~is_person].any()
    assert sum(seen) == sum(int((r["labels"] == person).sum()) for r in ours) < sum(len(r["boxes"]) for r in ours)


def test_training_losses_equal_torchvisions_when_every_class_has_keypoints():
    kp = next(c for c in CATEGORIES if c.get("keypoints"))
    cats = [dict(c, keypoints=kp["keypoints"], skeleton=kp.get("skeleton")) for c in CATEGORIES]
    model = mb.build(TINY, _cmap(cats)).train()
    plain = mb.build(TINY, _cmap(cats))
    plain.load_state_dict(model.state_dict())
    plain.roi_heads.__class__ = RoIHeads
    plain.train()
    m = torch.zeros(2, 96, 96, dtype=torch.uint8)
    m[0, 10:40, 10:40] = 1
    m[1, 50:90, 40:70] = 1
    k = torch.zeros(2, 17, 3)
    k[:, :5] = torch.tensor([20.0, 20.0, 2.0])
    target = {"boxes": torch.tensor([[10.0, 10, 40, 40], [40, 50, 70, 90]]), "labels": torch.tensor([1, 3]),
              "masks": m, "keypoints": k}
    img = torch.rand(3, 96, 96)
    torch.manual_seed(5)
    ours = model([img], [target])
    torch.manual_seed(5)
    theirs = plain([img], [target])
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.allclose(ours[key], theirs[key]), key


def test_training_skips_the_keypoint_head_for_classes_without_keypoints():
    cmap = _cmap(CATEGORIES)
    model = mb.build(TINY, cmap).train()
    seen = _rois_seen_by_keypoint_head(model)
    m = torch.zeros(1, 96, 96, dtype=torch.uint8)
    m[0, 10:40, 10:40] = 1
    no_kp = next(cmap.label(c["id"]) for c in CATEGORIES if not c.get("keypoints"))
    target = {"boxes": torch.tensor([[10.0, 10, 40, 40]]), "labels": torch.tensor([no_kp]), "masks": m,
              "keypoints": torch.zeros(1, 17, 3)}
    losses = model([torch.rand(3, 96, 96)], [target])
    assert seen == [0] and float(losses["loss_keypoint"].detach()) == 0.0
    losses["loss_mask"].backward()  # the graph is whole without a keypoint box
