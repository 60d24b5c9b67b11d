"""Proposals: a Predictor that runs the active model in batches and hands back one ``Instances`` per image,
and ``propose`` that writes them to the store as proposals (the CLI and the UI both call it)."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db import annotations
from db.errors import UserError
from db.instances import Instances
from db.schema import ModelVersion
from db.store import Store
from model.build import (CocoNets, load_checkpoint, load_coco_nets, read_checkpoint, resize_problem, set_eval_size,
                         verify_checkpoint)
from model.categories import CategoryMap
from model.convert import instances_from_output, merge_person_keypoints
from model.options import ModelOptions
from model.data import UnusableImage, read_pixels, store_category_map


log = logging.getLogger(__name__)


def _one_line(e: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its type and the first line of its message."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}"[:limit]


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class Predictor:
    """Runs one model on images; compute once per image, hand back one Instances per image."""

    def __init__(self, cmap: CategoryMap, *, net: torch.nn.Module | None = None, coco: CocoNets | None = None,
                 version: ModelVersion | None = None, device: str = "auto", batch_size: int = 4,
                 channels_last: bool | None = None):
        """``channels_last`` (default: on CUDA) lays the backbone's weights and inputs out as NHWC, which
        the GPU's fp16 convolutions run fastest on; cuDNN then picks its kernels per input size."""
        self.cmap, self.version, self.batch_size = cmap, version, batch_size
        self._lock = threading.Lock()
        self.device = pick_device(device)
        self.net, self.coco = net, coco
        nhwc = self.device.type == "cuda" if channels_last is None else channels_last
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        for n in ([net] if net is not None else []) + ([coco.instances, coco.keypoints] if coco is not None else []):
            n.eval().to(self.device)
            if nhwc:
                n.backbone.to(memory_format=torch.channels_last)
        if coco is not None:
            by_name = {n: i for i, n in enumerate(coco.categories)}
            self._coco_label_to_cat = {by_name[n]: cid for cid, n in zip(cmap.ids, cmap.names) if n in by_name}
            person = [cid for cid, n, k in zip(cmap.ids, cmap.names, cmap.keypoints)
                      if n == "person" and list(k) == coco.keypoint_names]
            self._person_id = person[0] if person else None

    @classmethod
    def for_version(cls, store: Store, options: ModelOptions, version: ModelVersion | None = None,
                    batch_size: int = 4) -> "Predictor":
        """The active model version (or ``version``) on ``options.device``, refused if its classes disagree
        with the store."""
        version = version if version is not None else active_version(store)
        device = options.device
        cmap = store_category_map(store)
        if version is None:
            raise UserError("no model yet: fine-tune one first (app.py train --size tiny), "
                            "or load COCO weights (--weights coco, needs a download once)")
        if version.checkpoint == "coco":
            coco = load_coco_nets(options.coco_weights)
            pred = cls(cmap, coco=coco, version=version, device=device, batch_size=batch_size)
            pred.store_map = cmap
            return pred
        try:
            net, config, own = load_checkpoint(store.settings.models_dir / version.checkpoint, cmap, partial=True)
        except UserError as e:
            raise UserError(f"the model version {version.id} cannot be loaded: {e}. Train a new version (Model "
                            "tab, or app.py train), or make another one active (app.py activate VERSION)") from None
        set_eval_size(net, config)
        pred = cls(own, net=net, version=version, device=device, batch_size=batch_size)
        pred.known = set(own.shared_with(cmap))  # categories added since are not proposed (yet)
        pred.unknown = [n for cid, n in zip(cmap.ids, cmap.names) if cid not in pred.known]
        pred.store_map = cmap  # the store's categories when it was made
        return pred

    known: set[int] | None = None  # the store's categories this model proposes (None: all of its own)
    unknown: list[str] = []  # the store's categories it does not know (added after it was trained)
    store_map: CategoryMap | None = None

    @property
    def classes_changed(self) -> bool:
        """Whether the store's categories differ from those this model was trained on (added, renamed or
        deleted since)."""
        return self.known is not None and (bool(self.unknown) or len(self.known) < len(self.cmap.ids))

    def category_of(self, label: int) -> int | None:
        """The store category of a model label; None for one the store no longer has as the model knew it."""
        if not 0 < label <= len(self.cmap.ids):
            return None
        cid = self.cmap.category_id(label)
        return cid if self.known is None or cid in self.known else None

    def note(self) -> str:
        """What a user should know about this model's classes ("" when it knows every store category)."""
        if not self.unknown or self.version is None:
            return ""
        names = ", ".join(f"'{n}'" for n in self.unknown[:5]) + (" …" if len(self.unknown) > 5 else "")
        return (f"model version {self.version.id} was trained before {names} existed: it proposes the other "
                "categories; fine-tune to have it propose these too")

    def input_problem(self, height: int, width: int) -> str | None:
        """Why this model cannot look at a ``height`` x ``width`` image (its resize would leave a side of 0
        pixels: model.build.resize_problem); None when it can."""
        nets = [self.net] if self.net is not None else [self.coco.instances, self.coco.keypoints]
        for n in nets:
            why = resize_problem(n.transform.min_size, n.transform.max_size, height, width)
            if why:
                return why
        return None

    def decode_fit(self, height: int, width: int) -> tuple[int, int]:
        """The (width, height) a ``height`` x ``width`` image must at least be decoded at for this model: the
        size its networks' transforms shrink it to (torchvision's ``GeneralizedRCNNTransform``: the shorter
        side to ``min_size``, the longer at most ``max_size``), so a photo decoded at 1/2, 1/4 or 1/8 of its
        size (``model.data.read_pixels``' ``fit``) gives the network the same input size. A model that
        enlarges the image needs it whole."""
        nets = [self.net] if self.net is not None else [self.coco.instances, self.coco.keypoints]
        fw, fh = 1, 1
        for n in nets:
            short, long = min(height, width), max(height, width)
            scale = min(float(n.transform.min_size[-1]) / short, float(n.transform.max_size) / long)
            if scale >= 1.0:
                return width, height
            fw, fh = max(fw, math.ceil(width * scale) + 1), max(fh, math.ceil(height * scale) + 1)
        return min(width, fw), min(height, fh)

    def read(self, path, height: int, width: int) -> np.ndarray:
        """A stored image's pixels as this model needs them: a JPEG photo decoded at the reduced scale its
        transform makes no use of beyond (``decode_fit``); ``predict`` with ``sizes`` maps its results back to
        the stored image's pixels. UnusableImage when they cannot be had."""
        return read_pixels(path, height, width, fit=self.decode_fit(height, width))

    def predict_each(self, pixels: Sequence[np.ndarray], min_score: float | None = None,
                     sizes: Sequence[tuple[int, int]] | None = None
                     ) -> tuple[list[Instances | None], dict[int, str]]:
        """``predict``, where an image the network fails on does not take the others with it: when a batch
        fails, each image is tried alone. Returns the proposals per image (None for a failed one) and the
        reason per failed position. When every image of several fails alone too, the model (or the device) is
        what fails, not the images: that error is raised."""
        try:
            return list(self.predict(pixels, min_score, sizes)), {}
        except Exception as e:  # noqa: BLE001 - sorted out image by image below
            if len(pixels) == 1:
                return [None], {0: "the model failed on it: " + _one_line(e)}
            log.warning("a batch of %d images failed (%s); trying each alone", len(pixels), _one_line(e))
            first = e
        out: list[Instances | None] = []
        failed: dict[int, str] = {}
        for k, p in enumerate(pixels):
            try:
                out += self.predict([p], min_score, None if sizes is None else [sizes[k]])
            except Exception as e:  # noqa: BLE001 - this image is one the model fails on
                out.append(None)
                failed[k] = "the model failed on it: " + _one_line(e)
        if len(failed) == len(pixels):
            raise first
        return out, failed

    DEFAULT_SCORE = 0.05  # torchvision's box_score_thresh: what evaluation sees

    @torch.inference_mode()
    def predict(self, pixels: Sequence[np.ndarray], min_score: float | None = None,
                sizes: Sequence[tuple[int, int]] | None = None) -> list[Instances]:
        """Proposals for each image (H, W, 3 uint8): one Instances per image, boxes xywh, RLE masks.

        Detections scored below ``min_score`` (default ``DEFAULT_SCORE``) are dropped before the mask and
        keypoint heads, so they are never computed, pasted, copied or encoded. ``sizes`` (height, width per
        image): the stored images' sizes when ``pixels`` were decoded smaller (``read``); boxes, masks and
        keypoints come in those images' pixels."""
        score = self.DEFAULT_SCORE if min_score is None else float(min_score)
        sizes = [tuple(p.shape[:2]) for p in pixels] if sizes is None else [tuple(map(int, s)) for s in sizes]
        out: list[Instances] = []
        with self._lock:  # the score threshold is the heads' setting while this call runs
            for k in range(0, len(pixels), self.batch_size):
                batch = [upload(p, self.device) for p in pixels[k:k + self.batch_size]]
                original = sizes[k:k + self.batch_size]
                with _autocast(self.device):
                    if self.coco is not None:
                        out += self._predict_coco(batch, score, original)
                    else:
                        slices = self.cmap.keypoint_slices
                        found = detect(self.net, batch, score, original)
                        out += [instances_from_output(r, h, w, self.category_of, slices.get)
                                for r, (h, w) in zip(found, original)]
        return out

    def _predict_coco(self, batch, score: float, original: list[tuple[int, int]]) -> list[Instances]:
        inst = detect(self.coco.instances, batch, score, original)
        kp = (detect(self.coco.keypoints, batch, min(score, 0.5), original) if self._person_id is not None
              else [None] * len(batch))
        preds = []
        for r, k, (h, w) in zip(inst, kp, original):
            p = instances_from_output(r, h, w, self._coco_label_to_cat.get, lambda lab: None)
            if k is not None:
                p = merge_person_keypoints(p, k, self._person_id)
            preds.append(p)
        return preds


def upload(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """An (H, W, 3) uint8 image as the (3, H, W) float tensor in [0, 1] the networks take: uploaded as uint8
    (from pinned memory to a GPU, a quarter of the bytes of float) and converted on the device."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if not a.flags.writeable:  # (a decoded image's buffer; torch wants memory it may write)
        a = a.copy()
    t = torch.from_numpy(a).permute(2, 0, 1)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.float().div_(255.0)


def _channels_last(net: torch.nn.Module) -> bool:
    """Whether the backbone's weights are laid out channels-last (its inputs should be too)."""
    w = net.backbone.body.conv1.weight
    return not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)


def detect(net: torch.nn.Module, images: list[torch.Tensor], min_score: float,
           original: Sequence[tuple[int, int]] | None = None) -> list[dict[str, torch.Tensor]]:
    """torchvision's detector forward (transform, backbone, RPN, heads) with the score threshold applied
    before the mask and keypoint heads, and masks left as the head's (N, M, M) probabilities under
    ``mask_probs`` instead of pasted one by one into full images (``convert.instances_from_output`` pastes
    them all at once, only over their boxes). Boxes and keypoints are in the original images' pixels. The
    threshold is the heads' setting while it runs: callers serialise their calls (``Predictor`` holds a lock).
    ``original``: the (height, width) the results are in, when the images were decoded smaller."""
    if original is None:
        original = [tuple(int(v) for v in img.shape[-2:]) for img in images]
    heads = net.roi_heads
    kept = heads.score_thresh
    heads.score_thresh = min_score
    try:
        resized, _ = net.transform(images)
        batch = resized.tensors
        if _channels_last(net):
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = net.backbone(batch)
        proposals, _ = net.rpn(resized, features)
        found, _ = heads(features, proposals, resized.image_sizes)
    finally:
        heads.score_thresh = kept
    for r in found:
        if "masks" in r:
            r["mask_probs"] = r.pop("masks")[:, 0]
    return net.transform.postprocess(found, resized.image_sizes, original)


def active_version(store: Store) -> ModelVersion | None:
    with store.session() as s:
        return s.scalars(select(ModelVersion).where(ModelVersion.is_active)).first()


def ensure_round0(store: Store, options: ModelOptions) -> ModelVersion | None:
    """With ``--weights coco`` (or a local COCO file) and no model yet, register torchvision's COCO networks
    as version 1 (round 0). Prints nothing; raises WeightsUnavailable when they cannot be loaded."""
    if active_version(store) is not None or options.weights == "none":
        return active_version(store)
    w = options.weights
    if w != "coco":  # a path: a maskloop checkpoint, else a COCO state dict (load_coco_nets names a bad one)
        if not Path(w).is_file():
            raise UserError(f"--weights {w}: no such file (expected coco, none or the path of a checkpoint)")
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
    try:
        with store.transaction() as s:
            mv.is_active, mv.promoted = True, True
            s.add(mv)
    except IntegrityError:  # another process registered one first (one active version: db.schema)
        return active_version(store)
    return mv


def propose(store: Store, image_ids: Sequence[int], predictor: Predictor, *, min_score: float = 0.3,
            progress: Callable[[int, int], None] | None = None, chunk: int = 16) -> dict[str, Any]:
    """Run the predictor on images and write proposals, replacing earlier unreviewed model proposals of
    those images; accepted and rejected annotations are never touched.

    A pipeline: while the model runs on one chunk of images, the next chunk is decoded by a thread pool and
    the previous one's rows are written by a writer thread, one transaction per chunk (a chunk's proposals
    appear all at once or not at all). Every id is checked before anything runs.

    An image the model cannot use is skipped and the rest go on: one it cannot look at (``input_problem``,
    known from the image's size before anything is decoded), one whose media file cannot be read, or one the
    network fails on alone (``Predictor.predict_each``). Its reason is recorded on the image
    (db.annotations.record_problems, which also ends a worker's claim on it) and cleared when proposals are
    written for it later. Returns {"images": images given, "proposals": proposals written, "skipped":
    {image id: reason}}."""
    ids = list(image_ids)
    rows = annotations.images(store, ids)
    missing = [i for i in ids if i not in rows]
    if missing:
        raise UserError(f"no image with id {', '.join(map(str, missing[:20]))}"
                        f"{' …' if len(missing) > 20 else ''} in the store; nothing was proposed")
    version_id = predictor.version.id if predictor.version is not None else None
    skipped = {i: why for i in ids if (why := predictor.input_problem(rows[i].height, rows[i].width))}
    annotations.record_problems(store, skipped, version_id)
    todo = [i for i in ids if i not in skipped]
    chunks = [todo[k:k + chunk] for k in range(0, len(todo), chunk)]
    written, done = 0, len(skipped)

    def pixels_of(image_id: int) -> np.ndarray | str:
        """The image's pixels, or why they cannot be had."""
        try:
            return predictor.read(store.media_file(rows[image_id].media_path), rows[image_id].height,
                                  rows[image_id].width)
        except UnusableImage as e:
            return str(e)

    def run(chunk_ids: list[int], pixels: list[np.ndarray | str]) -> tuple[dict[int, Instances], dict[int, str]]:
        """The chunk's proposals by image id, and the images left out with their reasons."""
        bad = {i: p for i, p in zip(chunk_ids, pixels) if isinstance(p, str)}
        good = [(i, p) for i, p in zip(chunk_ids, pixels) if not isinstance(p, str)]
        sizes = [(rows[i].height, rows[i].width) for i, _ in good]
        preds, failed = predictor.predict_each([p for _, p in good], min_score, sizes) if good else ([], {})
        bad.update((good[k][0], why) for k, why in failed.items())
        skipped.update(bad)
        return {i: p for (i, _), p in zip(good, preds) if p is not None}, bad

    def write(preds: dict[int, Instances], bad: dict[int, str]) -> int:
        annotations.record_problems(store, bad, version_id)
        kept = {iid: p.take(p.score_array() >= min_score)  # (the round-0 keypoint network's persons)
                for iid, p in preds.items()}
        return sum(annotations.write_proposals_of_images(store, kept, version_id).values()) if kept else 0

    def result() -> dict[str, Any]:
        return {"images": len(ids), "proposals": written, "skipped": {i: skipped[i] for i in ids if i in skipped}}

    if len(chunks) <= 1:  # one chunk (one image opened in the UI): nothing to overlap, no threads to start
        if chunks:
            written = write(*run(chunks[0], [pixels_of(i) for i in chunks[0]]))
        if progress:
            progress(len(ids), len(ids))
        return result()
    with ThreadPoolExecutor(2, thread_name_prefix="decode") as decoders, \
            ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        decoding = [decoders.submit(pixels_of, i) for i in chunks[0]]
        writing = None
        for k, chunk_ids in enumerate(chunks):
            pixels = [f.result() for f in decoding]
            if k + 1 < len(chunks):
                decoding = [decoders.submit(pixels_of, i) for i in chunks[k + 1]]
            preds, bad = run(chunk_ids, pixels)
            del pixels
            if writing is not None:  # one chunk in writing at a time: memory stays bounded
                written += writing.result()
                done += len(chunks[k - 1])
                if progress:
                    progress(done, len(ids))
            writing = writer.submit(write, preds, bad)
        if writing is not None:
            written += writing.result()
            if progress:
                progress(len(ids), len(ids))
    return result()


def images_to_propose(store: Store) -> list[int]:
    return annotations.images_to_propose(store)
