"""Pasting mask-head output into images: the batched paste gives torchvision's masks pixel for pixel."""

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from db import masks as mask_codec
from model.convert import instances_from_output, paste_masks


def _boxes(n, h, w, gen):
    """Boxes as the detector gives them: clipped to the image, some thin, some touching its edges."""
    c = torch.rand(n, 2, generator=gen) * torch.tensor([w, h]) * 1.2 - 5
    wh = torch.rand(n, 2, generator=gen) * torch.tensor([w, h]) + 0.1
    b = torch.cat([c, c + wh], 1)
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    return b


@pytest.mark.parametrize("seed", range(5))
def test_batched_paste_equals_torchvisions_paste_mask_by_mask(seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        h, w = (int(v) for v in torch.randint(3, 150, (2,), generator=gen))
        n = int(torch.randint(1, 8, (1,), generator=gen))
        probs = torch.rand(n, 1, 28, 28, generator=gen)
        boxes = _boxes(n, h, w, gen)
        want = (paste_masks_in_image(probs, boxes, (h, w))[:, 0] > 0.5).numpy()
        crops, x0, y0 = paste_masks(probs[:, 0], boxes, h, w)
        got = mask_codec.encode_crops(crops, x0, y0, h, w)
        for k in range(n):
            assert got[k] == mask_codec.encode(want[k])


def test_paste_in_chunks_gives_the_same_masks():
    gen = torch.Generator().manual_seed(7)
    probs, boxes = torch.rand(9, 28, 28, generator=gen), _boxes(9, 90, 120, gen)
    whole = paste_masks(probs, boxes, 90, 120)
    chunked = paste_masks(probs, boxes, 90, 120, max_elements=3000)
    assert all(np.array_equal(a, b) for a, b in zip(whole, chunked))


def test_output_with_mask_probabilities_or_pasted_masks_gives_the_same_instances():
    gen = torch.Generator().manual_seed(3)
    probs, boxes = torch.rand(4, 28, 28, generator=gen), _boxes(4, 60, 80, gen)
    base = {"boxes": boxes, "labels": torch.tensor([1, 2, 1, 3]), "scores": torch.tensor([0.9, 0.8, 0.7, 0.6])}
    pasted = paste_masks_in_image(probs[:, None], boxes, (60, 80))
    cat = {1: 10, 2: 20}.get  # label 3 is not in the store: dropped before any mask work
    a = instances_from_output(base | {"mask_probs": probs}, 60, 80, cat, lambda lab: None)
    b = instances_from_output(base | {"masks": pasted}, 60, 80, cat, lambda lab: None)
    assert a.category_ids == b.category_ids == [10, 20, 10]
    assert a.segmentations == b.segmentations and a.bboxes == b.bboxes
