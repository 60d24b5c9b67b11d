"""Fine-tuning: a plain training loop with before/after-step hooks (progress, cancel), and ``fine_tune``
which wires data, model, evaluation on the fixed held-out split, checkpoint and model-version row."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import uuid
from typing import Any, Callable, Iterator, NamedTuple

import torch
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from db import annotations
from db.errors import UserError
from db.schema import ModelVersion
from db.store import Store
from model import distributed
from model import evaluate as ev
from model.build import (WeightsUnavailable, build, freeze_pretrained, init_from_coco, load_coco_nets, read_checkpoint,
                         resize_problem, save_checkpoint, set_eval_size, transfer, classes_of, keypoints_of,
                         verify_checkpoint)
from model.categories import CategoryMap
from model.options import ModelOptions
from model.config import ModelConfig, get
from model.data import AspectBatches, Sample, TrainDataset, collate, labeled_samples, store_category_map
from model.distributed import Dist
from model.predict import Predictor, active_version, pick_device


class Cancelled(Exception):
    pass


@dataclasses.dataclass
class TrainOptions:
    epochs: int | None = None  # None: as many as fit in max_minutes (DEFAULT_EPOCHS without a time limit)
    max_minutes: float | None = None
    size: str | None = None  # None: the active model's size (tiny when there is none)
    promote: str = "better"  # better | always
    batch_size: int = 4
    lr: float | None = None
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    clip_norm: float = 10.0
    keypoint_loss_weight: float = 0.1  # the keypoint loss is ~10x the others early on and would swamp them
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    weights: str = "coco"  # round-0 weights (ModelOptions.weights): a full model starts from them

    def __post_init__(self):
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise UserError(f"epochs {self.epochs!r}: give a whole number of at least 1, or leave it out to train "
                            "for the minutes given")
        if self.max_minutes is not None and not (isinstance(self.max_minutes, (int, float))
                                                 and math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise UserError(f"max minutes {self.max_minutes!r}: give a positive number of minutes")

    @property
    def model_options(self) -> ModelOptions:
        return ModelOptions(device=self.device, weights=self.weights)


@dataclasses.dataclass
class Progress:
    iteration: int
    total: int
    losses: dict[str, float]
    elapsed: float
    eta: float
    phase: str = "training"


@dataclasses.dataclass
class TrainResult:
    version_id: int
    promoted: bool
    metrics: dict[str, Any]
    parent_metrics: dict[str, Any] | None
    iterations: int
    seconds: float
    warnings: list[str]
    skipped: dict[int, str] = dataclasses.field(default_factory=dict)  # images left out: image id -> reason


PLAN_PROBE = 8  # iterations timed to plan a run that a time limit binds
PLANS = 3  # the plan from the probe, then again after a quarter of what is left (at least PLAN_PROBE), twice
DEFAULT_EPOCHS = 10  # without --epochs and without a time limit
UNBOUNDED = 10 ** 9  # iterations of a run that only its time limit ends


def iterations_for(opts: TrainOptions, batches_per_epoch: int) -> int:
    """The most iterations a run may take: its epochs; with a time limit and no epochs, as many as fit in
    the time (the plan is made from the measured rate, ``train_loop``); neither: DEFAULT_EPOCHS."""
    if opts.epochs is None and opts.max_minutes:
        return UNBOUNDED
    return max(1, (opts.epochs or DEFAULT_EPOCHS) * batches_per_epoch)


def lr_factor(it: int, planned: int, warmup: int) -> float:
    """The learning rate's multiplier at iteration ``it`` of ``planned``: linear warm-up, then cosine decay
    to 2 % at the end. A function of the iteration only, so a run is reproducible from its seed."""
    done = min(1.0, it / max(1, planned))
    return min(1.0, (it + 1) / max(1, warmup)) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * done)))


def train_loop(model: torch.nn.Module, loader, opts: TrainOptions, total_iters: int, device: torch.device,
               deadline: float | None, after_step: Callable[[Progress], None],
               dist: Dist | None = None, skipped: dict[int, str] | None = None) -> list[list[float]]:
    """Iterate over ``loader`` until ``total_iters`` or the deadline; returns the loss curve [[it, loss]].

    Images come as uint8 (``TrainDataset``) and are made float on the device (a quarter of the bytes through
    pinned memory and the copy); float images are taken as they are. With a deadline, the first
    ``PLAN_PROBE`` iterations are timed and the run is planned to the number of iterations that fit (never
    more than ``total_iters``), then planned again after a quarter of what was left (``PLANS`` plans in
    all), from the rate since the plan before (the first iterations are slow: allocators, caches): the
    schedule decays over that plan. One host sync per iteration (the losses, read once for the curve, the
    progress and the divergence check). An image the loader could not read
    (``TrainDataset`` gives None for it) is left out of its batch and named in ``skipped`` (image id ->
    reason); a batch left empty is no iteration.

    With ``dist`` (several processes) the processes agree once per iteration, between the forward and the
    backward pass (``Dist.agree``), on rank 0's plan, on a cancel, on whether every loss is finite and on
    whether any of them failed (in the forward pass, or loading the next batch, which is loaded ahead for
    that), and stop or raise together: no process is left in the backward pass's all_reduce, nor in the
    collectives DDP runs at the start of a forward pass, waiting for one that stopped. A batch left empty
    there is a failure."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = _optimizer(params, opts)
    planned = plan = total_iters  # planned: what every process runs; plan: rank 0's latest, agreed next
    sched = torch.optim.lr_scheduler.LambdaLR(  # (reads ``planned`` as it is planned again)
        optim, lambda it: lr_factor(it, planned, max(1, min(opts.warmup_iters, planned // 5))))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    model.train().to(device)
    curve: list[list[float]] = []
    it = 0
    cancel = False
    feed = _batches(loader, device, skipped, dist is not None)
    batch = next(feed)
    if dist is not None and dist.agree(plan, False, True, batch.failure is not None, device).failed:
        _raise_failure(dist, batch.failure, it)
    t0 = time.monotonic()
    mark, pace = (t0, 0), 0.0  # (time, iteration) of the last plan; seconds per iteration since the one before
    next_plan, plans = PLAN_PROBE, 0
    while it < planned:
        failure, values, ahead = batch.failure, None, None
        if failure is None:
            try:
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    losses = model(batch.images, batch.targets)
                    loss = sum(v * (opts.keypoint_loss_weight if k == "loss_keypoint" else 1.0)
                               for k, v in losses.items())
                values = torch.stack([loss.detach().float()] + [v.detach().float() for v in losses.values()]).tolist()
            except Exception as e:  # noqa: BLE001 - with several processes, said to the others first
                if dist is None:
                    raise
                failure = e
        finite = values is not None and math.isfinite(values[0])
        if dist is not None:  # every process stops, or raises, at the same iteration
            ahead = next(feed)
            v = dist.agree(plan, cancel, finite, failure is not None or ahead.failure is not None, device)
            planned = v.planned
            if v.failed:
                _raise_failure(dist, failure or ahead.failure, it)
            if v.diverged:
                raise UserError(f"training diverged at iteration {it} (the loss of {v.diverged} of the "
                                f"{dist.world} training processes is not finite); try a lower --lr")
            if v.cancel:
                raise Cancelled()
            if it >= planned:  # rank 0 planned to stop here (a time limit, known after its probe)
                return curve
        elif not finite:
            raise UserError(f"training diverged at iteration {it} (loss {values[0]}); try a lower --lr")
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optim)
        torch.nn.utils.clip_grad_norm_(params, opts.clip_norm)
        scaler.step(optim)
        scaler.update()
        sched.step()
        it += 1
        now = time.monotonic()
        elapsed = max(now - t0, 1e-6)
        rate = pace or elapsed / it
        if deadline is not None and it == next_plan and plans < PLANS:  # plan to what the time allows, at the
            pace = max(now - mark[0], 1e-6) / (it - mark[1])  # rate since the last plan (the first are slow)
            mark, rate = (now, it), pace
            plan = min(total_iters, it + max(0, int((deadline - now) / rate)))
            plans += 1
            next_plan = it + max(PLAN_PROBE, (plan - it) // 4)
            if dist is None:
                planned = plan
        curve.append([it, round(values[0], 5)])
        remaining = plan - it
        if deadline is not None:
            remaining = min(remaining, max(0, int((deadline - time.monotonic()) / rate)))
        try:
            after_step(Progress(it, it + remaining, {k: round(v, 4) for k, v in zip(losses, values[1:])},
                                elapsed, remaining * rate))
        except Cancelled:
            cancel = True  # (several processes: the others hear of it at the next agreement)
        if cancel and (dist is None or it >= planned):
            raise Cancelled()  # (after the last iteration no process waits for another)
        if it >= planned or (dist is None and deadline is not None and time.monotonic() >= deadline):
            return curve
        batch = ahead if ahead is not None else next(feed)
    return curve


class _Batch(NamedTuple):
    images: list | None
    targets: list | None
    failure: Exception | None = None  # (several processes) why this process has no batch


def _batches(loader, device: torch.device, skipped: dict[int, str] | None, several: bool) -> Iterator[_Batch]:
    """The loader's batches, epoch after epoch, on the device, without the images it could not read (named
    in ``skipped``). Alone, an error is raised and a batch left empty is passed over; with ``several``
    processes, either is given as the batch's ``failure`` (to be agreed on before anyone goes on)."""
    while True:
        batches, n = iter(loader), 0
        while True:
            try:
                try:
                    images, targets = next(batches)
                except StopIteration:
                    break
                if any(i is None for i in images):
                    images, targets, unread = _readable(images, targets)
                    if skipped is not None:
                        skipped.update(unread)
                    if not images:
                        if not several:
                            continue
                        raise UserError("no image of its batch could be read ("
                                        + "; ".join(f"image {i}: {why}" for i, why in unread.items()) + ")")
                images = [_on_device(i, device) for i in images]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            except Exception as e:  # noqa: BLE001 - with several processes, said to the others first
                if not several:
                    raise
                n += 1
                yield _Batch(None, None, e)
                continue
            n += 1
            yield _Batch(images, targets)
        if n == 0:  # (several processes: each has as many batches, DistributedSampler's shares)
            raise UserError("no batch to train on: no image of the training split could be read, or there are "
                            "fewer labeled training images than one batch for each training process")


def _optimizer(params: list[torch.nn.Parameter], opts: TrainOptions) -> torch.optim.Optimizer:
    lr = opts.lr or (1e-3 if opts.optimizer == "adamw" else 0.02 * opts.batch_size / 16)
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=opts.weight_decay)
    if opts.optimizer == "adamw":
        return adamw(params, lr=lr, weight_decay=opts.weight_decay)
    raise UserError(f"--optimizer {opts.optimizer!r}: choose adamw or sgd")


def adamw(params, **kw) -> torch.optim.AdamW:
    """AdamW with the fused kernel where this torch build has it for the parameters' device (several times
    faster on a GPU), else torch's default implementation."""
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, **kw)


def _on_device(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An image on the device as the float (3, H, W) in [0, 1] the networks take (uint8 is converted there)."""
    image = image.to(device, non_blocking=True)
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image


def _raise_failure(dist: Dist, mine: Exception | None, it: int) -> None:
    """Raise, on every process at once, the failure one or more of them had before the backward pass: a
    process raises its own error; the others a UserError naming each failed process and its error."""
    said = dist.failures(None if mine is None else f"{type(mine).__name__}: {_first_line(mine)}")
    if mine is not None:
        raise mine
    raise UserError(f"training stopped at iteration {it}: " + "; ".join(
        f"training process {rank} of {dist.world} failed ({why})" for rank, why in said))


def _first_line(e: BaseException, limit: int = 300) -> str:
    return (str(e).strip().splitlines() or [""])[0][:limit]


def _readable(images, targets) -> tuple[list, list, dict[int, str]]:
    """A batch without the images the loader could not read, and those (image id -> reason)."""
    keep_i, keep_t, unread = [], [], {}
    for img, t in zip(images, targets):
        if img is None:
            image_id, why = t["skipped"]
            unread[int(image_id)] = why
        else:
            keep_i.append(img)
            keep_t.append(t)
    return keep_i, keep_t, unread


def usable_samples(samples: list[Sample], min_sizes, max_size: int, skipped: dict[int, str]) -> list[Sample]:
    """The samples a network resizing to ``min_sizes`` / ``max_size`` can look at; the others are named in
    ``skipped`` (image id -> reason: model.build.resize_problem)."""
    out = []
    for smp in samples:
        why = resize_problem(min_sizes, max_size, smp.height, smp.width)
        if why:
            skipped[smp.image_id] = why
        else:
            out.append(smp)
    return out


def fine_tune(store: Store, opts: TrainOptions,
              on_progress: Callable[[Progress], bool] | None = None) -> TrainResult | None:
    """Fine-tune the active model (or start a new line when ``opts.size`` differs) on accepted labels.

    ``on_progress`` gets every step and returns True to cancel; a cancelled or failed run changes nothing.
    Started by torchrun (model.distributed), every process trains its share and only rank 0 evaluates and
    writes the version; the other ranks return None.
    """
    dist = distributed.from_env()
    try:
        return _fine_tune(store, opts, on_progress, dist)
    finally:
        if dist is not None:
            dist.finish()


def _fine_tune(store: Store, opts: TrainOptions, on_progress: Callable[[Progress], bool] | None,
               dist: Dist | None) -> TrainResult | None:
    t_start = time.monotonic()

    def phase(name: str) -> None:  # what the run is doing before its first iteration
        if on_progress is not None and on_progress(Progress(0, 0, {}, time.monotonic() - t_start, 0.0, phase=name)):
            raise Cancelled()

    device = pick_device(opts.device)
    if dist is not None:  # the processes meet first (rank 0 may come late, from its round-0 download)
        device = dist.device(device)
        dist.start(device)
    phase("reading the labels")
    cmap = store_category_map(store)
    active = _active_everywhere(store, dist)
    size = opts.size or (active.size if active is not None else "tiny")
    config = get(size)
    # images with nothing to label (every proposal rejected, or none) train as background: rejecting a
    # false positive teaches the model not to propose it again. An image the network cannot look at (its
    # resize would leave a side of 0 pixels) is left out and named, never the end of the run.
    skipped: dict[int, str] = {}
    every_train = labeled_samples(store, heldout=False)
    train_samples = usable_samples(every_train, config.min_size_train, config.max_size, skipped)
    every_heldout = labeled_samples(store, heldout=True)
    heldout = usable_samples(every_heldout, (config.min_size_test,), config.max_size, skipped)
    recorded: set[int] = set()

    def record() -> None:  # as soon as they are known: a run that fails or is cancelled later has said so too
        if dist is None or dist.main:
            annotations.record_problems(store, {i: why for i, why in skipped.items() if i not in recorded})
        recorded.update(skipped)

    record()
    problem = _data_problem(cmap, train_samples)
    if problem:
        raise UserError(problem + (f" ({len(skipped)} labeled image(s) the model cannot look at were left out: "
                                   "app.py stats names them)" if skipped else ""))
    counts = {cid: 0 for cid in cmap.ids}
    for s in train_samples:
        for cid in s.instances.category_ids:
            counts[cid] = counts.get(cid, 0) + 1
    warnings = [f"category {cid} '{cmap.names[cmap.ids.index(cid)]}' has no accepted instances in the training "
                f"split; the model cannot learn it yet" for cid, n in counts.items() if n == 0]
    warnings += [w for smp in train_samples + heldout for w in smp.skipped]

    parent = active if active is not None and active.size == size else None
    torch.manual_seed(opts.seed)  # (every rank builds the same network)
    phase("building the model")
    model, pretrained = _initial_model(store, opts, config, cmap, parent, warnings)
    if config.size == "full" and pretrained:
        freeze_pretrained(model)  # as torchvision's references fine-tune: frozen BatchNorm and stem
    loader = train_loader(TrainDataset(train_samples, cmap, augment=True, config=config), opts, device, dist)
    total = iterations_for(opts, len(loader))
    deadline = time.monotonic() + opts.max_minutes * 60 if opts.max_minutes else None

    def after_step(p: Progress) -> None:
        if on_progress is not None and on_progress(p):
            raise Cancelled()

    net = dist.wrap(model.to(device), device) if dist is not None else model
    try:
        curve = train_loop(net, loader, opts, total, device, deadline, after_step, dist, skipped)
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"out of GPU memory at batch size {opts.batch_size}: lower --batch-size or use "
                        "--size tiny; the active model is unchanged") from None
    finally:
        record()  # the files the loader could not read
    del loader  # its worker processes (kept from epoch to epoch) end here, before the evaluation
    if dist is not None and not dist.main:
        return None  # rank 0 evaluates and writes the version; this process leaves without waiting for it

    if on_progress is not None:
        on_progress(Progress(len(curve), len(curve), {}, time.monotonic() - t_start, 0.0, phase="evaluating"))
    set_eval_size(model, config)
    new_pred = Predictor(cmap, net=model, device=opts.device)
    evaluation = comparison = None
    before = old_pred = None
    if active is not None and heldout:
        try:
            old_pred = Predictor.for_version(store, opts.model_options, active)
        except UserError as e:
            warnings.append(f"active version {active.id} could not be evaluated: {e}")
    if old_pred is not None:  # both versions are scored on the same held-out images: those both can look at
        heldout = [smp for smp in heldout if not _cannot_look(old_pred, smp, active, skipped)]
    if heldout:
        gt, dets = ev.detections(new_pred, heldout, skipped)
        evaluation = comparison = ev.coco_evaluation(gt, dets, cmap)
        heldout = [smp for smp in heldout if smp.image_id not in skipped]  # (the files it could not read)
    if old_pred is not None and heldout:
        old_gt, old_dets = ev.detections(old_pred, heldout, skipped)
        if len(old_gt["images"]) != len(gt["images"]):  # a file that became unreadable in between
            kept = {im["id"] for im in old_gt["images"]}
            gt, dets = ev.restricted(gt, dets, kept)
            evaluation = comparison = ev.coco_evaluation(gt, dets, cmap)
        before = ev.coco_evaluation(old_gt, old_dets, old_pred.cmap)
    if before is not None and old_pred.classes_changed:
        # the categories changed since the active version was trained: compare on those both know
        shared = old_pred.known
        comparison = ev.coco_evaluation(gt, dets, cmap, only=shared)
        before = ev.coco_evaluation(old_gt, old_dets, old_pred.cmap, only=shared)
    metrics = evaluation.metrics if evaluation is not None else {}
    baseline = before.metrics if before is not None else None
    # a continuation: the active version trained further on at least the labels it had (the bar is lower)
    continues = (parent is not None and active is not None and parent.id == active.id
                 and sum(smp.image_id not in skipped for smp in train_samples) >= (active.images_used or 0))
    promoted, why = _should_promote(opts.promote, comparison, before, active, warnings, old_pred, continues)
    if why:
        metrics = metrics | {"promotion": why}

    if skipped:
        shown = ", ".join(f"{i}" for i in sorted(skipped)[:10]) + (" …" if len(skipped) > 10 else "")
        warnings.append(f"{len(skipped)} image(s) left out, each with its reason recorded (app.py stats, Dataset "
                        f"tab): {shown}")
    used = [smp.image_id for smp in every_train + every_heldout if smp.problem and smp.image_id not in skipped]
    name = f"{size}-{uuid.uuid4().hex[:12]}.pt"
    save_checkpoint(store.settings.models_dir / name, model.cpu(), config, cmap)
    row = dict(parent_id=parent.id if parent else None, size=size, checkpoint=name,
               images_used=sum(smp.image_id not in skipped for smp in train_samples),
               train_seconds=round(time.monotonic() - t_start, 2), loss_curve=_thin(curve),
               metrics=metrics | {"heldout_images": len(heldout)}, parent_metrics=baseline,
               category_map=cmap.to_dict(), promoted=promoted, is_active=promoted, note="; ".join(warnings))
    vid = _versions_change(store, lambda s: _added(s, ModelVersion(**row)), deactivate=promoted)
    record()  # the held-out images the evaluation left out
    annotations.clear_problems(store, used)  # looked at this time: what was recorded on them is past
    return TrainResult(vid, promoted, metrics, baseline, len(curve), time.monotonic() - t_start, warnings, skipped)


def _active_everywhere(store: Store, dist: Dist | None) -> ModelVersion | None:
    """The active version; with several processes, rank 0's on every one of them (another may have become
    active between their reads, and the version decides the network every process builds)."""
    active = active_version(store)
    if dist is None:
        return active
    vid = dist.share(active.id if active is not None else None)
    if active is not None and active.id == vid:
        return active
    with store.session() as s:
        return s.get(ModelVersion, vid) if vid is not None else None


def _versions_change(store: Store, change: Callable[[Any], Any], deactivate: bool) -> Any:
    """``change(session)`` in one transaction, after which (with ``deactivate``) every other version stops being
    active. The database holds at most one active version (db.schema.ModelVersion): an activation by another
    process that commits between this one's deactivation and its commit makes it fail on that rule, and it is
    tried again, then after the other."""
    for attempt in range(3):
        try:
            with store.transaction() as s:
                if deactivate:
                    s.execute(update(ModelVersion).where(ModelVersion.is_active).values(is_active=False))
                return change(s)
        except IntegrityError:
            if attempt == 2:
                raise


def _added(s, mv: ModelVersion) -> int:
    s.add(mv)
    s.flush()
    return mv.id


def _cannot_look(pred: Predictor, smp: Sample, version: ModelVersion, skipped: dict[int, str]) -> bool:
    """Whether the active version cannot look at a held-out image (named in ``skipped`` if so)."""
    why = pred.input_problem(smp.height, smp.width)
    if why:
        skipped[smp.image_id] = f"the active model (version {version.id}) cannot look at it: {why}"
    return bool(why)


def _data_problem(cmap: CategoryMap, train_samples: list) -> str | None:
    if not cmap.ids:
        return "the store has no categories: import a COCO file or add categories first"
    if not train_samples or sum(len(s.instances) for s in train_samples) == 0:
        return ("no accepted labels to train on: accept proposals or import labels, and mark the images done "
                "(held-out images, one in five by id, are never trained on)")
    return None


def training_data_problem(store: Store) -> str | None:
    """Why a fine-tune of this store cannot start (no categories, no labels to train on); None when it can.
    Counted in the database (a click on Fine-tune must not load every label of a large store)."""
    cmap = store_category_map(store)
    if not cmap.ids or annotations.training_label_count(store) == 0:
        return _data_problem(cmap, [])
    return None


def train_loader(ds: TrainDataset, opts: TrainOptions, device: torch.device,
                 dist: Dist | None = None) -> torch.utils.data.DataLoader:
    """Shuffled batches of like-oriented images (``AspectBatches``) from worker processes where there are cores
    to spare (``loader_workers``), pinned for a GPU. The workers stay from epoch to epoch: the caller deletes
    the loader when training ends, which ends them. The shuffle and each worker's random augmentation come
    from ``opts.seed`` (torch seeds worker k from the loader's generator). With ``dist``, a
    ``DistributedSampler`` gives each process its share, batched the same way (full batches only)."""
    workers = loader_workers(dist)
    order = torch.Generator().manual_seed(opts.seed)
    share = None
    if dist is not None:  # this process's share of each epoch; every process then has as many batches
        share = torch.utils.data.DistributedSampler(ds, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                                    seed=opts.seed)
    batches = AspectBatches(ds.samples, opts.batch_size, order, order=share,
                            drop_last=share is not None or len(ds) > opts.batch_size)
    return torch.utils.data.DataLoader(
        ds, batch_sampler=batches, collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(opts.seed + 1))


def loader_workers(dist: Dist | None = None) -> int:
    """Loader worker processes for one training process: its share of the cores it may run on (its CPU
    affinity, shared with the other training processes of this machine), less two (the training loop, and
    the rest), at most 4. None on a 2-core machine: they would take the cores the training uses."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, max(0, cores // (dist.local_world if dist is not None else 1) - 2))


def _initial_model(store: Store, opts: TrainOptions, config: ModelConfig, cmap: CategoryMap,
                   parent: ModelVersion | None, warnings: list[str]) -> tuple[torch.nn.Module, bool]:
    """The network to fine-tune, and whether it starts from trained weights (COCO's or the parent's)."""
    model = build(config, cmap)
    if parent is not None and parent.checkpoint == "coco":
        try:
            init_from_coco(model, load_coco_nets(opts.model_options.coco_weights), cmap)
            return model, True
        except WeightsUnavailable as e:
            warnings.append(str(e))
    elif parent is not None:
        try:
            ck = read_checkpoint(store.settings.models_dir / parent.checkpoint)
        except UserError as e:  # its file is gone or broken: never a dead end
            warnings.append(f"the active version {parent.id} cannot be loaded ({e}); training from scratch")
            return model, False
        src = CategoryMap.from_dict(ck["category_map"])
        transfer(model, ck["state_dict"], classes_of(src), classes_of(cmap), keypoints_of(src), cmap)
        return model, True
    elif config.size == "full" and opts.weights != "none":
        try:
            init_from_coco(model, load_coco_nets(opts.weights), cmap)
            return model, True
        except WeightsUnavailable as e:
            warnings.append(str(e) + " -- training from scratch")
    return model, False


def _should_promote(mode: str, new: ev.Evaluation | None, old: ev.Evaluation | None, active: ModelVersion | None,
                    warnings: list[str], old_pred: Predictor | None = None,
                    continues: bool = False) -> tuple[bool, str]:
    """Whether the new version becomes active, and why (shown with the version): with ``better``, a new
    start only when it beats the active one beyond the noise of the held-out split
    (``evaluate.better_beyond_noise``: on ``PROMOTE_SHARE`` of the resamples); a continuation (``continues``:
    the active version trained further on at least the labels it had, what every fine-tune of the loop is)
    unless the active one is better beyond the noise (the new one scores higher on under ``CONTINUE_SHARE``
    of them): more labels rarely make a model worse, and a stricter bar refused versions that were better
    on a test set (90 %: 3 of 10 fine-tunes; 50 %: 1 of 15, docs/loop.md). When
    the store's categories changed since the active version was trained, both are compared on the
    categories both know, and the new one (which knows them all) wins unless the active one is better there
    beyond the noise. An active version that cannot be evaluated at all is replaced, and that is said."""
    if mode == "always" or active is None:
        return True, ""
    if mode != "better":
        raise UserError(f"--promote {mode!r}: choose better or always")
    if new is None or ev.summary_score(new.metrics) is None:
        warnings.append("no held-out labels to compare it with the active version on: not promoted (make it active "
                        "by hand: Make active in the Model tab, or app.py activate; or train with --promote always)")
        return False, ""
    if old is None:
        return True, f"the active version {active.id} could not be evaluated (see the note), so it was replaced"
    if ev.summary_score(old.metrics) is None:
        return True, ""
    if old_pred is not None and old_pred.classes_changed:
        c = ev.better_beyond_noise(old, new)
        new_names = ", ".join(f"'{n}'" for n in old_pred.unknown) or "none"
        where = (f"the categories changed since version {active.id} was trained (new: {new_names}); on the "
                 f"{len(old_pred.known)} both know, version {active.id} was")
        if c.better:
            return False, (f"{where} better on {100 * c.share:.0f} % of {c.resamples} resamples of the {c.images} "
                           f"held-out images; make this version active to propose the new categories")
        return True, f"{where} better on only {100 * c.share:.0f} % of {c.resamples} resamples"
    c = ev.better_beyond_noise(new, old, needs=ev.CONTINUE_SHARE if continues else ev.PROMOTE_SHARE)
    return c.better, c.reason() + (f" (a continuation of version {active.id} on at least its labels)"
                                   if continues else "")


def _thin(curve: list[list[float]], keep: int = 400) -> list[list[float]]:
    step = max(1, len(curve) // keep)
    return curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else [])


def list_versions(store: Store) -> list[ModelVersion]:
    with store.session() as s:
        return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def activate(store: Store, version_id: int) -> ModelVersion:
    """Make a version active, once its checkpoint has loaded and run (a broken one is refused and the
    active model stays as it was)."""
    with store.session() as s:
        mv = s.get(ModelVersion, version_id)
    if mv is None:
        raise UserError(f"no model version {version_id}; app.py models lists them")
    if mv.checkpoint != "coco":
        if not mv.checkpoint:
            raise UserError(f"model version {version_id} has no checkpoint to load")
        verify_checkpoint(store.settings.models_dir / mv.checkpoint, store_category_map(store), partial=True)

    def make_active(s) -> ModelVersion:
        mv = s.get(ModelVersion, version_id)
        mv.is_active = True
        return mv

    return _versions_change(store, make_active, deactivate=True)
