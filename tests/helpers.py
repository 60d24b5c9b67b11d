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


def legacy_image(store, width: int, height: int, *, status: str = "new", name: str | None = None,
                 category_id: int | None = None, media: bool = True, image_id: int | None = None,
                 mode: str = "RGB") -> int:
    """An image row of any shape, written straight into the store as an older release let it in (import
    refuses such shapes now): its media file (a PNG of that size, unless ``media`` is False) and its row (of
    id ``image_id`` if given; a PNG of ``mode``); with ``category_id``, one accepted label over its middle. Returns its id."""
    import hashlib
    import io

    from PIL import Image as PILImage

    from db.schema import Annotation, Image, utcnow

    buf = io.BytesIO()
    PILImage.new(mode, (width, height), (120, 60, 30)).save(buf, "PNG")
    digest = hashlib.sha256(buf.getvalue() + (name or "").encode()).hexdigest()
    rel = f"{digest[:2]}/{digest}.png"
    if media:
        (store.settings.media_dir / digest[:2]).mkdir(parents=True, exist_ok=True)
        (store.settings.media_dir / rel).write_bytes(buf.getvalue())
    now = utcnow()
    with store.transaction() as s:
        im = Image(id=image_id, file_name=name or f"legacy_{width}x{height}.png", content_hash=digest,
                   media_path=rel, width=width, height=height, status=status, row_version=1, created_at=now,
                   updated_at=now)
        s.add(im)
        s.flush()
        if category_id is not None:
            x0, y0, x1, y1 = width / 4, height / 4, 3 * width / 4, 3 * height / 4
            s.add(Annotation(image_id=im.id, category_id=category_id, bbox=[x0, y0, x1 - x0, y1 - y0],
                             segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]], area=(x1 - x0) * (y1 - y0),
                             iscrowd=0, source="human", review_state="accepted", created_by="old release",
                             reviewed_by="old release", created_at=now, reviewed_at=now))
        return im.id
