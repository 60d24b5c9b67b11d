"""Model configurations. ``full``: Mask R-CNN R50-FPN v2 with a keypoint head attached (round 0 uses
torchvision's COCO Mask R-CNN v2 and Keypoint R-CNN). ``tiny``: ResNet-18-FPN with reduced heads, both
mask and keypoint heads, that trains in minutes on a CPU."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    size: str
    backbone: str
    fpn_channels: int
    min_size_train: tuple[int, ...]  # several sizes: scale jitter
    min_size_test: int
    max_size: int
    rpn_pre_nms_train: int
    rpn_post_nms_train: int
    rpn_pre_nms_test: int
    rpn_post_nms_test: int
    box_batch_per_image: int
    box_head_dim: int
    mask_head_layers: tuple[int, ...]
    keypoint_head_layers: tuple[int, ...]
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    roi_sampling_ratio: int = 2  # RoIAlign samples per bin side; 1 quarters its (CPU-heavy) backward
    box_positive_fraction: float = 0.25
    detections_per_image: int = 100


FULL = ModelConfig(
    size="full", backbone="resnet50", fpn_channels=256, min_size_train=(640, 672, 704, 736, 768, 800),
    min_size_test=800, max_size=1333, rpn_pre_nms_train=2000, rpn_post_nms_train=2000, rpn_pre_nms_test=1000,
    rpn_post_nms_test=1000, box_batch_per_image=512, box_head_dim=1024, mask_head_layers=(256, 256, 256, 256),
    keypoint_head_layers=(512,) * 8,
)

TINY = ModelConfig(
    size="tiny", backbone="resnet18", fpn_channels=64, min_size_train=(80, 96, 112), min_size_test=112,
    max_size=192, rpn_pre_nms_train=600, rpn_post_nms_train=300, rpn_pre_nms_test=300, rpn_post_nms_test=100,
    box_batch_per_image=64, box_head_dim=256, mask_head_layers=(64, 64, 64, 64), keypoint_head_layers=(64,) * 4,
    detections_per_image=50, anchor_sizes=(16, 32, 64, 128, 256), roi_sampling_ratio=1,
)

CONFIGS = {"full": FULL, "tiny": TINY}


def get(size: str) -> ModelConfig:
    if size not in CONFIGS:
        from db.errors import UserError

        raise UserError(f"unknown model size {size!r}; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[size]
