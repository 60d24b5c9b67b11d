"""Stand-in COCO weights, so that round 0 (``--weights coco``) runs offline in the tests and in ``bench/``.

torchvision's weights API reads a pretrained file from the torch hub cache,
``<TORCH_HOME>/hub/checkpoints/<basename of the weights' url>``, and downloads it only when it is not there
(the hash in the file name is checked on download, not on a cached file). ``write`` puts files of exactly
those names into a folder meant to be used as ``TORCH_HOME``: state dicts of torchvision's own
architectures, of the shapes the real COCO files have (Mask R-CNN v2 with 91 COCO labels; Keypoint R-CNN
with 2 labels and 17 keypoints, its ResNet's norms frozen as torchvision builds it with weights), with
random weights. The product code then loads them unchanged (``model.build.load_coco_nets``); the class
names that map COCO labels to a store's categories come from the weights enums, not from the files.

Random weights detect nothing meaningful: a stand-in tests the plumbing and measures time and memory,
never quality. ``write`` refuses a folder that is not empty unless it made it (a real torch cache is
never filled with stand-ins).

    TORCH_HOME=$(mktemp -d) python -c "import os; from model import standin; standin.write(os.environ['TORCH_HOME'])"
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from pathlib import Path

import torch
from torchvision.models.detection import (KeypointRCNN_ResNet50_FPN_Weights, MaskRCNN_ResNet50_FPN_V2_Weights,
                                          keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2)

WEIGHTS = (MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1, KeypointRCNN_ResNet50_FPN_Weights.COCO_V1)  # as load_coco_nets
MARKER = "MASKLOOP-STANDIN-WEIGHTS"  # in a folder ``write`` made: random weights, never a real cache


def checkpoint_path(torch_home: str | Path, weights) -> Path:
    """Where torchvision's weights API looks for ``weights`` when ``TORCH_HOME`` is ``torch_home`` (and
    ``torch.hub.set_dir`` was not called): torch.hub.load_state_dict_from_url's file name."""
    return Path(torch_home) / "hub" / "checkpoints" / os.path.basename(urllib.parse.urlparse(weights.url).path)


def _instances() -> dict[str, torch.Tensor]:
    """Mask R-CNN v2 with COCO's 91 labels, as torchvision builds it."""
    mw = WEIGHTS[0]
    return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                    num_classes=len(mw.meta["categories"])).state_dict()


def _keypoints() -> dict[str, torch.Tensor]:
    """Keypoint R-CNN with 2 labels and 17 keypoints. With weights, torchvision builds its ResNet with
    FrozenBatchNorm2d, which has no ``num_batches_tracked``: the file has none either."""
    kw = WEIGHTS[1]
    net = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(kw.meta["categories"]),
                                    num_keypoints=len(kw.meta["keypoint_names"]))
    return {k: v for k, v in net.state_dict().items()
            if not (k.startswith("backbone.body.") and k.endswith(".num_batches_tracked"))}


def write(torch_home: str | Path, seed: int = 0) -> list[Path]:
    """Write the stand-in COCO weights into ``torch_home`` (made if missing); returns their paths. Files it
    wrote before are kept. Each file appears whole or not at all. torch's global random state is left as it
    was."""
    home = Path(torch_home)
    if home.is_dir() and any(home.iterdir()) and not (home / MARKER).is_file():
        raise ValueError(f"{home} is not empty and holds no stand-in weights: give an empty folder, never a real "
                         "torch cache")
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("random weights under the names of torchvision's COCO files (model/standin.py)\n")
    paths = [checkpoint_path(home, w) for w in WEIGHTS]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for path, make in zip(paths, (_instances, _keypoints)):
            if not path.is_file():
                _save(make(), path)
    return paths


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
