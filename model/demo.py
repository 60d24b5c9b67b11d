"""Fill a store with synthetic images so a new user can try the whole loop offline: every held-out image
and some training images carry exact labels (done); the rest wait for proposals (new)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from PIL import Image

from db.coco_import import import_coco
from db.ingest import ingest
from db.store import Store
from db.annotations import is_heldout
from model.synthetic import make_coco


def fill_demo(store: Store, n_images: int = 120, labeled_train: int = 48, size: int = 96, seed: int = 0) -> dict:
    files, coco = make_coco(n_images, size=size, seed=seed)
    labeled, unlabeled, n_train = set(), [], 0
    for im in coco["images"]:
        if is_heldout(im["id"]):
            labeled.add(im["id"])
        elif n_train < labeled_train:
            labeled.add(im["id"])
            n_train += 1
        else:
            unlabeled.append(im["file_name"])
    part = {"images": [i for i in coco["images"] if i["id"] in labeled],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in labeled],
            "categories": coco["categories"],
            "info": {"description": "maskloop synthetic demo", "version": "1.0"}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, pix in files:
            Image.fromarray(pix).save(root / name)
        (root / "labels.json").write_text(json.dumps(part))
        import_coco(store, part, root, user="demo")
        report = ingest(store, [root / n for n in unlabeled])
    return {"labeled": len(labeled), "heldout": sum(1 for i in labeled if is_heldout(i)),
            "unlabeled": len(report.added)}
