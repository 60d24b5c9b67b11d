"""Small builders shared by tests."""

import numpy as np


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, built by hand: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}
