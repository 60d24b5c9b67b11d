"""Model tests on CPU with the tiny configuration."""

import types

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from db.coco_import import import_coco
from db.errors import UserError
from model import build as mb
from model.categories import CategoryMap
from model.config import CONFIGS, TINY
from model.data import TrainDataset, hflip, is_heldout, labeled_samples, store_category_map, target_for
from db.instances import Instances
from model.convert import add_detection, instances_from_output, merge_person_keypoints
from model.demo import fill_demo
from model.options import ModelOptions
from model.predict import Predictor
from model.synthetic import CATEGORIES, PERSON_KEYPOINTS


def _cmap(cats=CATEGORIES) -> CategoryMap:
    return CategoryMap.from_categories([types.SimpleNamespace(**{"keypoints": None, **c}) for c in cats])


@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_every_configuration_builds_with_mask_and_keypoint_heads(size):
    cmap = _cmap()
    model = mb.build(CONFIGS[size], cmap)
    assert model.roi_heads.has_mask() and model.roi_heads.has_keypoint()
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels == 17


def test_tiny_forward_train_and_eval_shapes():
    cmap = _cmap()
    model = mb.build(TINY, cmap)
    img = torch.rand(3, 96, 96)
    m = torch.zeros(1, 96, 96, dtype=torch.uint8)
    m[0, 10:40, 10:40] = 1
    target = {"boxes": torch.tensor([[10.0, 10, 40, 40]]), "labels": torch.tensor([2]), "masks": m,
              "keypoints": torch.zeros(1, 17, 3)}
    losses = model([img], [target])
    assert {"loss_mask", "loss_keypoint", "loss_classifier"} <= set(losses)
    model.eval()
    out = model([img])[0]
    assert out["masks"].shape[1:] == (1, 96, 96) and out["keypoints"].shape[1:] == (17, 3)


def test_category_map_keeps_ids_and_refuses_mismatch_by_name():
    cmap = _cmap()
    assert cmap.ids == (1, 3, 5, 9) and cmap.label(9) == 4 and cmap.category_id(2) == 3
    other = _cmap(CATEGORIES[:3] + [{"id": 9, "name": "rectangle", "supercategory": "shape"}])
    with pytest.raises(UserError, match="category 9 is 'square' in the checkpoint, 'rectangle' in the store"):
        cmap.check_matches(other)
    fewer = _cmap(CATEGORIES[:3])
    with pytest.raises(UserError, match="checkpoint has category 9 'square' that the store does not"):
        cmap.check_matches(fewer)


def test_flip_swaps_left_and_right_keypoints():
    cmap = _cmap()
    perm = cmap.flip_permutation()
    names = PERSON_KEYPOINTS
    assert names[perm[names.index("left_wrist")]] == "right_wrist" and perm[0] == 0
    img = torch.zeros(3, 10, 20)
    k = torch.zeros(1, 17, 3)
    k[0, names.index("left_wrist")] = torch.tensor([3.0, 4.0, 2.0])
    t = {"boxes": torch.tensor([[2.0, 1, 6, 5]]), "masks": torch.zeros(1, 10, 20, dtype=torch.uint8),
         "labels": torch.tensor([1]), "keypoints": k}
    _, f = hflip(img, t, perm)
    assert f["boxes"].tolist() == [[14.0, 1, 18, 5]]
    assert f["keypoints"][0, names.index("right_wrist")].tolist() == [17.0, 4.0, 2.0]
    assert f["keypoints"][0, names.index("left_wrist")].tolist() == [0.0, 0.0, 0.0]


def test_transfer_keeps_rows_of_matching_class_names():
    src_map = _cmap()
    dst_map = _cmap([CATEGORIES[3], {"id": 20, "name": "star", "supercategory": "shape"}, CATEGORIES[0]])
    src = mb.build(TINY, src_map)
    dst = mb.build(TINY, dst_map)
    kept = mb.transfer(dst, src.state_dict(), mb.classes_of(src_map), mb.classes_of(dst_map),
                       mb.keypoints_of(src_map), dst_map)
    assert dst_map.names == ("person", "square", "star")  # labels follow the store's ids
    assert kept == ["person", "square"]
    s, d = src.state_dict(), dst.state_dict()
    w = "roi_heads.box_predictor.cls_score.weight"
    src_labels = mb.classes_of(src_map)
    assert torch.equal(d[w][2], s[w][src_labels.index("square")])
    assert torch.equal(d[w][1], s[w][src_labels.index("person")])
    assert torch.equal(d[w][0], s[w][0])  # background
    b = "roi_heads.box_predictor.bbox_pred.weight"
    assert torch.equal(d[b][8:12], s[b][4 * 4:5 * 4])
    k = "roi_heads.keypoint_predictor.kps_score_lowres.weight"
    assert torch.equal(d[k], s[k])
    assert torch.equal(d["backbone.body.conv1.weight"], s["backbone.body.conv1.weight"])


def test_checkpoint_is_atomic_and_mismatch_refused(tmp_path, monkeypatch):
    cmap = _cmap()
    model = mb.build(TINY, cmap)
    path = tmp_path / "m.pt"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        mb.save_checkpoint(path, model, TINY, cmap)
    assert not path.exists() and not list(tmp_path.iterdir())  # no half-written file, no temp left
    monkeypatch.undo()
    mb.save_checkpoint(path, model, TINY, cmap)
    loaded, config, got = mb.load_checkpoint(path, cmap)
    assert config == TINY and got == cmap
    with pytest.raises(UserError, match="store has category 20 'star'"):
        mb.load_checkpoint(path, _cmap(CATEGORIES + [{"id": 20, "name": "star", "supercategory": "x"}]))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        mb.read_checkpoint(tmp_path / "junk.pt")


def test_coco_weights_offline_is_one_clear_message(monkeypatch):
    import model.build as build_mod

    def offline(*a, **k):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(build_mod, "maskrcnn_resnet50_fpn_v2", offline)
    monkeypatch.setattr(build_mod, "_cached", lambda url: False)
    monkeypatch.setattr(build_mod, "_reachable", lambda url, timeout=3.0: True)  # the host answers, the download fails
    with pytest.raises(mb.WeightsUnavailable, match="COCO weights could not be loaded.*proposals start after"):
        mb.load_coco_nets("coco")


def test_heldout_split_is_stable_and_about_one_in_five():
    flags = [is_heldout(i) for i in range(1, 1001)]
    assert 150 < sum(flags) < 250
    assert [is_heldout(i) for i in range(1, 101)] == flags[:100]


def test_prediction_to_coco_is_valid_rle_with_tight_box():
    m = np.zeros((2, 20, 30), np.uint8)
    m[0, 2:5, 3:9] = 1
    m[1, 10:20, 0:4] = 1
    from db.masks import encode_batch

    p = Instances(20, 30)
    for box, cat, score, rle, kps in zip([[3, 2, 9, 5], [0, 10, 4, 20]], [3, 1], [0.9, 0.4], encode_batch(m),
                                         [None, [1.0] * 51]):
        add_detection(p, cat, box, score, rle, kps)
    anns = p.to_coco(7, with_score=True)
    assert anns[0]["bbox"] == [3.0, 2.0, 6.0, 3.0] and anns[0]["area"] == 18
    assert isinstance(anns[0]["segmentation"]["counts"], str)
    assert np.array_equal(mask_utils.decode({"size": [20, 30], "counts": anns[0]["segmentation"]["counts"].encode()}), m[0])
    assert "keypoints" not in anns[0] and len(anns[1]["keypoints"]) == 51 and anns[1]["num_keypoints"] == 17
    assert len(p.take(p.score_array() > 0.5)) == 1


def test_person_found_by_both_networks_becomes_one_proposal():
    p = Instances(100, 100)
    for box, cat, score in zip([[10, 10, 50, 90], [60, 5, 80, 20]], [1, 3], [0.9, 0.8]):
        add_detection(p, cat, box, score, None, None)
    kp = {"boxes": torch.tensor([[12.0, 11, 49, 88], [100, 100, 140, 180]]), "scores": torch.tensor([0.95, 0.9]),
          "keypoints": torch.rand(2, 17, 3) * 50}
    merged = merge_person_keypoints(p, kp, person_id=1)
    assert len(merged) == 3  # the matched person gains keypoints; the unmatched one is added
    assert merged.keypoints[0] is not None and merged.keypoints[1] is None and merged.segmentations[2] is None


def test_training_targets_from_store(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    cmap = store_category_map(store)
    samples = labeled_samples(store, heldout=False) + labeled_samples(store, heldout=True)
    assert len(samples) == 12
    s = next(s for s in samples if any(k is not None for k in s.instances.keypoints))
    t = target_for(s, cmap)
    person = [i for i, k in enumerate(s.instances.keypoints) if k is not None][0]
    assert t["labels"][person] == 1 and t["keypoints"][person, :, 2].max() == 2
    x, y, w, h = s.instances.bboxes[0]
    assert t["boxes"][0].tolist() == [x, y, x + w, y + h]  # xywh -> xyxy
    img, t2 = TrainDataset([s], cmap, augment=False)[0]
    assert img.shape == (3, 96, 96) and t2["masks"].dtype == torch.uint8


def test_keypoint_categories_with_their_own_lists_get_their_own_channels():
    hand = {"id": 30, "name": "hand", "supercategory": "body", "keypoints": ["wrist", "thumb", "index"],
            "skeleton": [[1, 2], [1, 3]]}
    cmap = _cmap(CATEGORIES + [hand])
    assert cmap.keypoint_slices == {1: slice(0, 17), 5: slice(17, 20)} and cmap.num_keypoints == 20
    model = mb.build(TINY, cmap)
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels == 20
    sample = types.SimpleNamespace(height=40, width=40, instances=Instances.from_coco([
        {"category_id": 30, "bbox": [5, 5, 20, 20], "segmentation": None, "iscrowd": 0,
         "keypoints": [6, 6, 2, 10, 10, 1, 0, 0, 0]}], 40, 40))
    t = target_for(sample, cmap)
    assert t["keypoints"].shape == (1, 20, 3)
    assert t["keypoints"][0, 17].tolist() == [6, 6, 2] and t["keypoints"][0, :17].abs().sum() == 0
    out = {"boxes": torch.tensor([[1.0, 1, 9, 9], [2, 2, 8, 8]]), "labels": torch.tensor([5, 2]),
           "scores": torch.tensor([0.9, 0.8]), "masks": torch.ones(2, 1, 40, 40),
           "keypoints": torch.arange(2 * 20 * 3, dtype=torch.float32).reshape(2, 20, 3)}
    p = instances_from_output(out, 40, 40, cmap.category_id, cmap.keypoint_slices.get)
    assert list(p.category_ids) == [30, 3]
    k = p.keypoints_xyv(0)
    assert k.shape == (3, 3) and k[0, 0] == 17 * 3 and p.keypoints[1] is None


def test_weights_path_imports_a_maskloop_checkpoint_as_the_active_model(make_store, tmp_path, synth_dir):
    from model.predict import active_version, ensure_round0

    st = make_store(tmp_path / "s")
    import_coco(st, synth_dir / "annotations.json", synth_dir)
    cmap = store_category_map(st)
    path = tmp_path / "elsewhere.pt"
    mb.save_checkpoint(path, mb.build(TINY, cmap), TINY, cmap)
    st2 = make_store.open(st.settings)
    v = ensure_round0(st2, ModelOptions(weights=str(path)))
    assert v.is_active and v.size == "tiny" and active_version(st2).id == v.id
    pred = Predictor.for_version(st2, ModelOptions(weights=str(path)))
    assert len(pred.predict([np.zeros((50, 60, 3), np.uint8)])) == 1


def test_pretrained_full_model_fine_tunes_with_frozen_norms_and_stem():
    from torch import nn

    model = mb.build(CONFIGS["full"], _cmap())
    keys = set(model.state_dict())
    mb.freeze_pretrained(model)
    model.train()
    norms = [m for m in model.backbone.body.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    body = dict(model.backbone.body.named_parameters())
    assert not body["conv1.weight"].requires_grad and not body["layer1.0.conv1.weight"].requires_grad
    assert body["layer2.0.conv1.weight"].requires_grad and not body["layer2.0.bn1.weight"].requires_grad
    assert set(model.state_dict()) == keys and model.roi_heads.training  # checkpoints unchanged; heads train


def test_loader_workers_flip_differently_and_reproducibly(make_store, tmp_path):
    from model.data import collate

    st = make_store(tmp_path / "flips")
    fill_demo(st, n_images=6, labeled_train=5, size=48)
    cmap = store_category_map(st)
    sample = labeled_samples(st, heldout=False)[0]
    ds = TrainDataset([sample] * 32, cmap)
    original = ds.__class__([sample], cmap, augment=False)[0][0]

    def flips(seed):
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(seed))
        return [not torch.equal(images[0], original) for images, _ in loader]

    a = flips(0)
    assert a == flips(0) and 0 < sum(a) < len(a)
    assert a[0::2] != a[1::2]  # the two workers (even and odd batches) draw different flips


def test_aspect_batches_keep_orientations_apart_and_see_every_image_once():
    from model.data import AspectBatches

    samples = [types.SimpleNamespace(width=200, height=100) if k % 3 else types.SimpleNamespace(width=80, height=160)
               for k in range(23)]
    for drop_last in (False, True):
        sampler = AspectBatches(samples, 4, torch.Generator().manual_seed(0), drop_last)
        batches = list(sampler)
        assert len(batches) == len(sampler) == (5 if drop_last else 6)
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen)) and (drop_last or sorted(seen) == list(range(23)))
        full = batches[:-2]  # all but the leftovers: one orientation each
        assert all(len({samples[i].width > samples[i].height for i in b}) == 1 for b in full)
    assert list(AspectBatches(samples, 4, torch.Generator().manual_seed(1), False)) != batches


def test_channels_last_predicts_what_the_default_layout_does():
    import copy

    torch.manual_seed(0)
    cmap = _cmap()
    net = mb.build(TINY, cmap)
    mb.set_eval_size(net, TINY)
    pixels = [(np.random.default_rng(1).random((96, 96, 3)) * 255).astype(np.uint8)]
    plain = Predictor(cmap, net=copy.deepcopy(net), device="cpu", channels_last=False).predict(pixels, 0.0)[0]
    nhwc = Predictor(cmap, net=copy.deepcopy(net), device="cpu", channels_last=True)
    assert nhwc.net.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    got = nhwc.predict(pixels, 0.0)[0]
    assert len(got) == len(plain) > 0 and got.category_ids == plain.category_ids
    assert np.allclose(got.boxes(), plain.boxes(), atol=0.05) and np.allclose(got.scores, plain.scores, atol=1e-4)
