"""Pasting mask-head output into images: the batched paste gives torchvision's masks pixel for pixel."""

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
        got = _encoded(paste_masks(probs[:, 0], boxes, h, w), n, h, w)
        for k in range(n):
            assert got[k] == mask_codec.encode(want[k])


def _encoded(groups, n, h, w):
    rles = [None] * n
    for at, crops, x0, y0 in groups:
        for j, r in zip(at, mask_codec.encode_crops(crops, x0, y0, h, w)):
            assert rles[j] is None  # every mask in exactly one group
            rles[j] = r
    return rles


def test_paste_in_chunks_gives_the_same_masks():
    gen = torch.Generator().manual_seed(7)
    probs, boxes = torch.rand(9, 28, 28, generator=gen), _boxes(9, 90, 120, gen)
    whole = _encoded(paste_masks(probs, boxes, 90, 120), 9, 90, 120)
    chunked = paste_masks(probs, boxes, 90, 120, max_elements=3000)
    assert len(chunked) > 1 and _encoded(chunked, 9, 90, 120) == whole


def test_one_image_sized_detection_among_many_small_ones_allocates_by_size_group():
    """A 4000x3000 photo with one detection over the whole image and 99 small ones: the crops are grouped
    by size, never 100 image-sized crops (1.2 GB where the small ones need a few MB)."""
    h, w = 3000, 4000
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(99, 2, generator=gen) * torch.tensor([w - 60, h - 60])
    small = torch.cat([xy, xy + 20 + torch.rand(99, 2, generator=gen) * 30], 1)
    boxes = torch.cat([torch.tensor([[0.0, 0.0, w, h]]), small])
    probs = torch.rand(100, 28, 28, generator=gen)
    groups = paste_masks(probs, boxes, h, w)
    sizes = sorted(c.size for _, c, _, _ in groups)
    assert sizes[-1] == w * h and sum(sizes[:-1]) < 2_000_000  # the whole-image crop alone; the rest small
    got = _encoded(groups, 100, h, w)
    want = (paste_masks_in_image(probs[:3, None], boxes[:3], (h, w))[:, 0] > 0.5).numpy()
    assert got[1:3] == [mask_codec.encode(m) for m in want[1:]]
    # the image-sized one: float32 rounding of the resize's source coordinates differs from torch's own
    # in a few pixels of millions at this size (9 of 12 M here)
    assert (mask_codec.decode(got[0], h, w).astype(bool) != want[0]).sum() < 20


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


def test_pasting_in_bands_of_rows_gives_the_same_masks(monkeypatch):
    from model import convert

    gen = torch.Generator().manual_seed(11)
    probs, boxes = torch.rand(6, 28, 28, generator=gen), _boxes(6, 300, 400, gen)
    whole = _encoded(paste_masks(probs, boxes, 300, 400), 6, 300, 400)
    paste = convert._paste
    monkeypatch.setattr(convert, "_paste", lambda *a, **kw: paste(*a, rows_at_once=500, **kw))  # a few rows a band
    assert _encoded(paste_masks(probs, boxes, 300, 400), 6, 300, 400) == whole
