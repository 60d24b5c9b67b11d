"""Building networks and loading weights. Heads are attached to torchvision's Mask R-CNN, not forked.

Data contract of every network built here (torchvision's): input a list of float tensors (3, H, W) in
[0, 1]; in training, targets with ``boxes`` float (N, 4) xyxy in pixels, ``labels`` int64 (N,) model
labels 1..C, ``masks`` uint8 (N, H, W) and ``keypoints`` float (N, K, 3) (x, y, visibility) where K is the
sum of every keypoint category's keypoint count (see CategoryMap.keypoint_slices). In eval, one dict per
image with ``boxes`` xyxy, ``labels``, ``scores``, ``masks`` (N, 1, H, W) probabilities and
``keypoints`` (N, K, 3).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN, keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from db.errors import UserError
from model.categories import CategoryMap
from model.config import ModelConfig, get
from model.heads import KeypointAwareRoIHeads

CHECKPOINT_FORMAT = "maskloop-checkpoint-1"


def build(config: ModelConfig, cmap: CategoryMap) -> MaskRCNN:
    """A Mask R-CNN for the store's categories, with a keypoint head when any category has keypoints."""
    common = dict(
        min_size=config.min_size_train, max_size=config.max_size,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_train, rpn_post_nms_top_n_train=config.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_test, rpn_post_nms_top_n_test=config.rpn_post_nms_test,
        box_batch_size_per_image=config.box_batch_per_image, box_positive_fraction=config.box_positive_fraction,
        box_detections_per_img=config.detections_per_image,
    )
    if config.size == "full":
        model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=cmap.num_classes, **common)
    else:
        backbone = _resnet_fpn(config)
        ch, dim = config.fpn_channels, config.box_head_dim
        anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
        levels, sr = ["0", "1", "2", "3"], config.roi_sampling_ratio
        model = MaskRCNN(
            backbone, num_classes=None, rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(levels, 7, sr), mask_roi_pool=MultiScaleRoIAlign(levels, 14, sr),
            box_head=TwoMLPHead(ch * 7 * 7, dim), box_predictor=FastRCNNPredictor(dim, cmap.num_classes),
            mask_head=MaskRCNNHeads(ch, list(config.mask_head_layers), 1, norm_layer=nn.BatchNorm2d),
            mask_predictor=MaskRCNNPredictor(config.mask_head_layers[-1], config.mask_head_layers[-1],
                                             cmap.num_classes),
            **common,
        )
    if cmap.num_keypoints:
        ch = config.fpn_channels
        heads = model.roi_heads
        heads.keypoint_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, config.roi_sampling_ratio)
        heads.keypoint_head = KeypointRCNNHeads(ch, list(config.keypoint_head_layers))
        heads.keypoint_predictor = KeypointRCNNPredictor(config.keypoint_head_layers[-1], cmap.num_keypoints)
    KeypointAwareRoIHeads.adopt(model.roi_heads, list(cmap.keypoint_slices))  # keypoints only where they exist
    model.transform.min_size = config.min_size_train
    return model


def _resnet_fpn(config: ModelConfig) -> BackboneWithFPN:
    """ResNet-18/34 + FPN, trained from scratch (no ImageNet download): BatchNorm, not frozen BN."""
    body = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=nn.BatchNorm2d)
    return BackboneWithFPN(body, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
                           [64, 128, 256, 512], config.fpn_channels, extra_blocks=LastLevelMaxPool())


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm that stays in inference mode (its statistics and affine frozen) whatever ``train()``
    says: torchvision's references fine-tune pretrained detectors so, since batches of a few images give
    useless statistics. Same parameters and buffers as BatchNorm2d, so checkpoints are unchanged."""

    def train(self, mode: bool = True):
        return super().train(False)


def freeze_pretrained(model: MaskRCNN, trainable_layers: int = 3) -> None:
    """Freeze the backbone's BatchNorm layers and its stem (everything before the last
    ``trainable_layers`` ResNet stages), as torchvision's references do with pretrained weights."""
    body = model.backbone.body
    stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    for name, p in body.named_parameters():
        if not any(name.startswith(s) for s in stages):
            p.requires_grad_(False)
    for m in body.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = FrozenBatchNorm2d
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def set_eval_size(model: MaskRCNN, config: ModelConfig) -> None:
    model.transform.min_size = (config.min_size_test,)


def resize_problem(min_sizes: int | Sequence[int], max_size: int, height: int, width: int) -> str | None:
    """Why a network whose transform (torchvision's GeneralizedRCNNTransform) resizes images to ``min_sizes``
    on their shorter side (the smallest of several: the worst case of scale jitter) and at most ``max_size`` on
    their longer side cannot take a ``height`` x ``width`` image: the resize would leave a side of 0 pixels,
    and torch's interpolate fails ("Input and output sizes should be greater than 0"). That happens past
    ``max_size``:1 (192:1 for the tiny configuration, 1333:1 for the full one). None when it can take it.
    The same arithmetic as torchvision's: a float32 scale, sizes floored."""
    if height < 1 or width < 1:
        return f"{width}x{height}: an image with no pixels"
    smallest = min(min_sizes) if isinstance(min_sizes, Sequence) else min_sizes
    short, long = np.float32(min(height, width)), np.float32(max(height, width))
    scale = float(min(np.float32(smallest) / short, np.float32(max_size) / long))
    rw, rh = math.floor(width * scale), math.floor(height * scale)
    if min(rw, rh) >= 1:
        return None
    return (f"{width}x{height}: the model shrinks it to {rw}x{rh} pixels (its longer side to {max_size}), which "
            f"leaves nothing to look at; it takes images up to {max_size}:1")


# --- moving class rows between label spaces --------------------------------------------------------

_CLASS_ROWS = {  # parameter -> rows per class
    "roi_heads.box_predictor.cls_score.weight": 1, "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4, "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1, "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}
_KP_KEYS = {"roi_heads.keypoint_predictor.kps_score_lowres.weight": 1,  # ConvTranspose: (in, K, k, k)
            "roi_heads.keypoint_predictor.kps_score_lowres.bias": 0}


def transfer(model: nn.Module, src_state: dict[str, torch.Tensor], src_classes: list[str],
             dst_classes: list[str], src_keypoints: dict[str, list[str]] | None = None,
             dst_map: CategoryMap | None = None) -> list[str]:
    """Copy ``src_state`` into ``model``: equal-shaped tensors as they are; class rows by class name
    (background included); keypoint channels by (class name, keypoint name). Returns the classes that kept
    pretrained rows."""
    dst = model.state_dict()
    src_index = {n: i for i, n in enumerate(src_classes)}
    pairs = [(d, src_index[n]) for d, n in enumerate(dst_classes) if n in src_index]
    for key, t in dst.items():
        s = src_state.get(key)
        if s is None:
            continue
        if key in _CLASS_ROWS:
            r = _CLASS_ROWS[key]
            for d, si in pairs:
                t[d * r:(d + 1) * r] = s[si * r:(si + 1) * r]
        elif key in _KP_KEYS and dst_map is not None and src_keypoints:
            dim = _KP_KEYS[key]
            src_slices = _slices(src_keypoints)
            for label, sl in dst_map.keypoint_slices.items():
                name = dst_map.names[label - 1]
                if name not in src_slices:
                    continue
                s_names, s_sl = src_keypoints[name], src_slices[name]
                for j, kp in enumerate(dst_map.keypoints[label - 1]):
                    if kp in s_names:
                        t.select(dim, sl.start + j).copy_(s.select(dim, s_sl.start + s_names.index(kp)))
        elif s.shape == t.shape:
            t.copy_(s)
    model.load_state_dict(dst)
    return [n for d, n in enumerate(dst_classes) if d > 0 and n in src_index]


def _slices(kps: dict[str, list[str]]) -> dict[str, slice]:
    out, start = {}, 0
    for name, names in kps.items():
        out[name] = slice(start, start + len(names))
        start += len(names)
    return out


def classes_of(cmap: CategoryMap) -> list[str]:
    return ["__background__", *cmap.names]


def keypoints_of(cmap: CategoryMap) -> dict[str, list[str]]:
    return {cmap.names[label - 1]: list(cmap.keypoints[label - 1]) for label in cmap.keypoint_slices}


# --- checkpoints -----------------------------------------------------------------------------------

def save_checkpoint(path: Path, model: nn.Module, config: ModelConfig, cmap: CategoryMap, extra: dict | None = None) -> None:
    """Atomic: a temporary file in the same folder, then a rename; never a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "size": config.size, "category_map": cmap.to_dict(),
                    "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    **(extra or {})}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's first line, cut to ``limit`` characters (torch's load errors run to paragraphs)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise UserError(f"checkpoint {path} cannot be read ({_first_line(e)})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} is not a maskloop checkpoint")
    return ck


def load_checkpoint(path: str | Path, store_map: CategoryMap,
                    partial: bool = False) -> tuple[MaskRCNN, ModelConfig, CategoryMap]:
    """A trained network and its own category map; refused with a message naming the classes when they
    disagree with the store (with ``partial``: only when they share none), and with one naming the mismatch
    when the weights are not of the configuration the file claims."""
    ck = read_checkpoint(path)
    try:
        cmap = CategoryMap.from_dict(ck["category_map"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path}: its category map is unreadable ({e})") from None
    cmap.check_matches(store_map, partial)
    config = get(ck.get("size"))
    model = build(config, cmap)
    try:
        model.load_state_dict(ck["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()
        raise UserError(f"checkpoint {path} does not fit a maskloop '{config.size}' model of this store's "
                        f"classes: {' '.join(first[:3])[:300]}") from None
    return model, config, cmap


def verify_checkpoint(path: str | Path, store_map: CategoryMap, partial: bool = False) -> None:
    """Load a checkpoint and run one tiny forward pass, so that a file of another architecture, size or
    class list is refused (UserError) before it is registered or made active, never after."""
    model, _, _ = load_checkpoint(path, store_map, partial)
    model.eval()
    t = model.transform
    sizes = (t.min_size, t.max_size)
    t.min_size, t.max_size = (64,), 64  # a cheap pass: the point is that every layer runs
    try:
        with torch.inference_mode():
            out = model([torch.zeros(3, 64, 64)])
        if not (isinstance(out, list) and len(out) == 1 and "boxes" in out[0]):
            raise UserError(f"checkpoint {path}: the network does not return detections")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the pass means the file is unusable here
        raise UserError(f"checkpoint {path} loads but cannot run: {type(e).__name__}: {str(e)[:200]}") from None
    finally:
        t.min_size, t.max_size = sizes


# --- torchvision's COCO weights (round 0) ----------------------------------------------------------

@dataclasses.dataclass
class CocoNets:
    """Round 0: torchvision's COCO Mask R-CNN v2 and person Keypoint R-CNN."""

    instances: nn.Module
    keypoints: nn.Module
    categories: list[str]  # index = COCO label of the instance net
    keypoint_names: list[str]


class WeightsUnavailable(UserError):
    pass


def _cached(url: str) -> bool:
    """Is this torchvision weights file in the torch hub cache already?"""
    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)).exists()


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_coco_nets(weights: str = "coco", config: ModelConfig | None = None) -> CocoNets:
    """``coco``: torchvision's weights API (downloads once into the torch hub cache). A path: a local
    state dict of ``maskrcnn_resnet50_fpn_v2`` (COCO, 91 classes); keypoints still come from torchvision.
    Both networks look at images as a fine-tuned model of ``config`` (default: the full configuration) does:
    its test size, RPN proposals and detections per image (the full configuration's are torchvision's own).
    Raises WeightsUnavailable with one clear line when they cannot be had (offline)."""
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights, MaskRCNN_ResNet50_FPN_V2_Weights

    mw, kw = MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1, KeypointRCNN_ResNet50_FPN_Weights.COCO_V1
    config = config or get("full")
    sizes = dict(min_size=config.min_size_test, max_size=config.max_size,
                 rpn_pre_nms_top_n_test=config.rpn_pre_nms_test, rpn_post_nms_top_n_test=config.rpn_post_nms_test,
                 box_detections_per_img=config.detections_per_image)
    inst = None
    if weights != "coco":  # a local file: a wrong one is the user's mistake, named as such
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"--weights {weights}: no such file") from None
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
            raise UserError(f"--weights {weights}: not a file torch can read ({_first_line(e, 160)})") from None
        inst = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **sizes)
        try:
            inst.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - wrong keys or shapes, or not a dict at all
            raise UserError(f"--weights {weights}: neither a maskloop checkpoint nor a state dict of torchvision's "
                            f"maskrcnn_resnet50_fpn_v2 with 91 COCO classes ({_first_line(e, 160)})") from None
    missing = [w.url for w in ([mw] if inst is None else []) + [kw] if not _cached(w.url)]
    if missing and not _reachable(missing[0]):  # one line from us, not torch's "Downloading ..." and then ours
        raise WeightsUnavailable(
            f"COCO weights are not downloaded yet and {urllib.parse.urlparse(missing[0]).hostname} cannot be reached "
            "(offline?); proposals start after the first fine-tune (app.py train --size tiny)")
    try:
        if inst is None:
            inst = maskrcnn_resnet50_fpn_v2(weights=mw, **sizes)
        kp = keypointrcnn_resnet50_fpn(weights=kw, **sizes)
    except Exception as e:  # noqa: BLE001 - offline, proxy, disk: all mean the same to the user
        raise WeightsUnavailable(
            f"COCO weights could not be loaded ({type(e).__name__}: {str(e)[:120]}); proposals start after "
            "the first fine-tune (app.py train --size tiny)") from None
    return CocoNets(inst, kp, list(mw.meta["categories"]), list(kw.meta["keypoint_names"]))


def init_from_coco(model: MaskRCNN, coco: CocoNets, cmap: CategoryMap) -> list[str]:
    """Start a full-size network from the COCO nets: backbone, RPN and heads from the instance net, class rows
    by name, the keypoint head from Keypoint R-CNN (person keypoints by name)."""
    kept = transfer(model, coco.instances.state_dict(), coco.categories, classes_of(cmap))
    kp_state = {k: v for k, v in coco.keypoints.state_dict().items() if k.startswith("roi_heads.keypoint_")}
    if cmap.num_keypoints:
        transfer(model, kp_state, ["__background__", "person"], classes_of(cmap),
                 src_keypoints={"person": coco.keypoint_names}, dst_map=cmap)
    return kept
