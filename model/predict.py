"""Proposals: one per-image Prediction structure, a Predictor that runs the active model in batches, and
``propose`` that writes proposals to the store (the CLI and the UI both call it)."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import uuid
from typing import Any, Callable, Sequence

import numpy as np
import torch
from sqlalchemy import select

from db import annotations
from db import masks as mask_codec
from db.errors import UserError
from db.media import load_rgb
from db.schema import ModelVersion
from db.store import Store
from model.build import CocoNets, load_checkpoint, load_coco_nets, read_checkpoint, set_eval_size, verify_checkpoint
from model.categories import CategoryMap
from model.data import image_tensor, store_category_map


@dataclasses.dataclass
class Prediction:
    """One image's proposals. boxes: float32 (N, 4) xyxy in pixels; category_ids: int64 (N,) store ids;
    scores: float32 (N,); rles: N compressed COCO RLEs (str counts); keypoints: per instance (K, 3) in the
    category's keypoint order, or None."""

    boxes: np.ndarray
    category_ids: np.ndarray
    scores: np.ndarray
    rles: list[dict[str, Any]]
    keypoints: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.scores)

    def filter(self, keep: np.ndarray) -> "Prediction":
        idx = np.flatnonzero(keep)
        return Prediction(self.boxes[idx], self.category_ids[idx], self.scores[idx],
                          [self.rles[i] for i in idx], [self.keypoints[i] for i in idx])

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO annotation dicts (bbox xywh tight around the mask, area = mask pixels, score)."""
        out = []
        for i in range(len(self)):
            rle = self.rles[i]
            d = {"image_id": image_id, "category_id": int(self.category_ids[i]), "score": float(self.scores[i]),
                 "iscrowd": 0}
            if rle is not None:
                d["segmentation"] = rle
                d["area"] = mask_codec.area(rle, *rle["size"])
                d["bbox"] = mask_codec.bbox_xywh(rle, *rle["size"])
            else:
                x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
                d["bbox"] = [x0, y0, x1 - x0, y1 - y0]
                d["area"] = (x1 - x0) * (y1 - y0)
            if d["area"] == 0 and rle is not None:  # an empty mask: keep the detector's box
                x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
                d["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            k = self.keypoints[i]
            if k is not None:
                d["keypoints"] = [round(float(v), 2) for v in k.reshape(-1)]
                d["num_keypoints"] = int((k[:, 2] > 0).sum())
            out.append(d)
        return out


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _to_prediction(out: dict[str, torch.Tensor], label_to_cat: Callable[[int], int | None],
                   kp_slice: Callable[[int], slice | None], mask_threshold: float = 0.5) -> Prediction:
    labels = out["labels"].cpu().numpy()
    cats = np.array([label_to_cat(int(lab)) or -1 for lab in labels], dtype=np.int64)
    keep = cats >= 0
    masks = out.get("masks")
    if masks is not None:
        binary = (masks[:, 0] > mask_threshold).to("cpu", torch.uint8).numpy()  # threshold on the device
        rles: list = mask_codec.encode_batch(binary)
    else:
        rles = [None] * len(labels)
    kps_t = out.get("keypoints")
    kps = []
    for i, lab in enumerate(labels):
        sl = kp_slice(int(lab)) if kps_t is not None else None
        if sl is None:
            kps.append(None)
        else:
            k = kps_t[i, sl].float().cpu().numpy().copy()
            k[:, 2] = 2
            kps.append(k)
    p = Prediction(out["boxes"].float().cpu().numpy(), cats, out["scores"].float().cpu().numpy(), rles, kps)
    return p.filter(keep)


class Predictor:
    """Runs one model on images; compute once per image, hand back Predictions."""

    def __init__(self, cmap: CategoryMap, *, net: torch.nn.Module | None = None, coco: CocoNets | None = None,
                 version: ModelVersion | None = None, device: str = "auto", batch_size: int = 4):
        self.cmap, self.version, self.batch_size = cmap, version, batch_size
        self.device = pick_device(device)
        self.net, self.coco = net, coco
        if net is not None:
            net.eval().to(self.device)
        if coco is not None:
            for n in (coco.instances, coco.keypoints):
                n.eval().to(self.device)
            by_name = {n: i for i, n in enumerate(coco.categories)}
            self._coco_label_to_cat = {by_name[n]: cid for cid, n in zip(cmap.ids, cmap.names) if n in by_name}
            person = [cid for cid, n, k in zip(cmap.ids, cmap.names, cmap.keypoints)
                      if n == "person" and list(k) == coco.keypoint_names]
            self._person_id = person[0] if person else None

    @classmethod
    def for_version(cls, store: Store, version: ModelVersion | None = None, device: str | None = None,
                    batch_size: int = 4) -> "Predictor":
        """The active model version (or ``version``), refused if its classes disagree with the store."""
        version = version if version is not None else active_version(store)
        device = device or store.settings.device
        cmap = store_category_map(store)
        if version is None:
            raise UserError("no model yet: fine-tune one first (app.py train --size tiny), "
                            "or load COCO weights (--weights coco, needs a download once)")
        if version.checkpoint == "coco":
            coco = load_coco_nets(store.settings.coco_weights)
            return cls(cmap, coco=coco, version=version, device=device, batch_size=batch_size)
        net, config, _ = load_checkpoint(store.settings.models_dir / version.checkpoint, cmap)
        set_eval_size(net, config)
        return cls(cmap, net=net, version=version, device=device, batch_size=batch_size)

    @torch.inference_mode()
    def predict(self, pixels: Sequence[np.ndarray]) -> list[Prediction]:
        out: list[Prediction] = []
        for k in range(0, len(pixels), self.batch_size):
            batch = [image_tensor(p).to(self.device, non_blocking=True) for p in pixels[k:k + self.batch_size]]
            with _autocast(self.device):
                if self.coco is not None:
                    out += self._predict_coco(batch)
                else:
                    res = self.net(batch)
                    slices = self.cmap.keypoint_slices
                    out += [_to_prediction(r, lambda lab: self.cmap.category_id(lab)
                                           if 0 < lab <= len(self.cmap.ids) else None, slices.get) for r in res]
        return out

    def _predict_coco(self, batch) -> list[Prediction]:
        inst = self.coco.instances(batch)
        kp = self.coco.keypoints(batch) if self._person_id is not None else [None] * len(batch)
        preds = []
        for r, k in zip(inst, kp):
            p = _to_prediction(r, self._coco_label_to_cat.get, lambda lab: None)
            if k is not None:
                p = merge_person_keypoints(p, k, self._person_id)
            preds.append(p)
        return preds


def merge_person_keypoints(p: Prediction, kp_out: dict[str, torch.Tensor], person_id: int,
                           iou_threshold: float = 0.5, min_score: float = 0.5) -> Prediction:
    """A person found by both networks becomes one proposal with its mask and its keypoints (matched greedily
    by box IoU); a person only the keypoint network found is added with keypoints and box."""
    from torchvision.ops import box_iou

    kb = kp_out["boxes"].float().cpu()
    ks = kp_out["scores"].float().cpu()
    kk = kp_out["keypoints"].float().cpu().numpy()
    sel = ks >= min_score
    kb, ks, kk = kb[sel], ks[sel], kk[sel.numpy()]
    persons = np.flatnonzero(p.category_ids == person_id)
    used = set()
    keypoints = list(p.keypoints)
    if len(persons) and len(kb):
        iou = box_iou(torch.from_numpy(p.boxes[persons]), kb).numpy()
        for pi in np.argsort(-p.scores[persons]):
            j = int(np.argmax(np.where([q in used for q in range(len(kb))], -1, iou[pi])))
            if iou[pi, j] >= iou_threshold and j not in used:
                used.add(j)
                k = kk[j].copy()
                k[:, 2] = 2
                keypoints[persons[pi]] = k
    extra = [j for j in range(len(kb)) if j not in used]
    boxes = np.concatenate([p.boxes, kb[extra].numpy()]) if extra else p.boxes
    cats = np.concatenate([p.category_ids, np.full(len(extra), person_id)]) if extra else p.category_ids
    scores = np.concatenate([p.scores, ks[extra].numpy()]) if extra else p.scores
    for j in extra:
        k = kk[j].copy()
        k[:, 2] = 2
        keypoints.append(k)
    return Prediction(boxes, cats, scores, p.rles + [None] * len(extra), keypoints)


def active_version(store: Store) -> ModelVersion | None:
    with store.session() as s:
        return s.scalars(select(ModelVersion).where(ModelVersion.is_active)).first()


def ensure_round0(store: Store) -> ModelVersion | None:
    """With ``--weights coco`` (or a local COCO file) and no model yet, register torchvision's COCO networks
    as version 1 (round 0). Prints nothing; raises WeightsUnavailable when they cannot be loaded."""
    if active_version(store) is not None or store.settings.weights == "none":
        return active_version(store)
    w = store.settings.weights
    if w not in ("coco",) and not w.endswith((".pth", ".pt")):
        raise UserError(f"--weights {w!r}: expected coco, none or a checkpoint path")
    if w != "coco":
        try:
            ck = read_checkpoint(w)
        except UserError:
            ck = None
        if ck is not None:  # a maskloop checkpoint from elsewhere: becomes the active model once it runs
            verify_checkpoint(w, store_category_map(store))
            store.settings.models_dir.mkdir(parents=True, exist_ok=True)
            name = f"imported-{uuid.uuid4().hex[:12]}.pt"
            shutil.copyfile(w, store.settings.models_dir / name)
            return _register(store, ModelVersion(size=ck["size"], checkpoint=name, note=f"imported from {w}",
                                                 category_map=ck["category_map"]))
    load_coco_nets(w)  # raises WeightsUnavailable offline
    return _register(store, ModelVersion(size="full", checkpoint="coco", note="torchvision COCO weights (round 0)",
                                         category_map=store_category_map(store).to_dict()))


def _register(store: Store, mv: ModelVersion) -> ModelVersion:
    with store.transaction() as s:
        mv.is_active, mv.promoted = True, True
        s.add(mv)
    return mv


def propose(store: Store, image_ids: Sequence[int], predictor: Predictor, *, min_score: float = 0.3,
            progress: Callable[[int, int], None] | None = None, chunk: int = 16) -> dict[str, int]:
    """Run the predictor on images and write proposals, replacing earlier unreviewed model proposals of
    those images; accepted and rejected annotations are never touched."""
    written = 0
    for k in range(0, len(image_ids), chunk):
        ids = list(image_ids[k:k + chunk])
        rows = annotations.images(store, ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise UserError(f"no image with id {', '.join(map(str, missing))} in the store")
        pixels = [np.asarray(load_rgb(store.media_file(rows[i].media_path))) for i in ids]
        preds = predictor.predict(pixels)
        for iid, pred in zip(ids, preds):
            pred = pred.filter(pred.scores >= min_score)
            written += write_proposals(store, iid, pred, predictor.version.id)
        if progress:
            progress(min(k + chunk, len(image_ids)), len(image_ids))
    return {"images": len(image_ids), "proposals": written}


def write_proposals(store: Store, image_id: int, pred: Prediction, version_id: int) -> int:
    """Replace the image's unreviewed proposals with ``pred`` (see db.annotations.write_proposals)."""
    return annotations.write_proposals(store, image_id, pred.to_coco(image_id), version_id)


def images_to_propose(store: Store) -> list[int]:
    return annotations.images_to_propose(store)
