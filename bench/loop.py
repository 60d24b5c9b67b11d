"""The loop, measured: a simulated labeler works through a synthetic store with exact ground truth, round
after round, through the project's own code paths, and counts what each image cost.

    .venv/bin/python bench/loop.py            # 6 rounds of 20 images, both queue orders (under 40 min here)
    .venv/bin/python bench/loop.py --quick    # 2 rounds of 4 images, seconds of training: a smoke test

Each round the labeler opens the next images of the project's queue (``db.annotations.queue``: the default
fixed shuffle; or, for the comparison arm, "most uncertain first"), in a ``LabelSession`` driven by the
canvas's own edit messages (``annotator.canvas.apply``: accept, reject, class, keypoint, assist, save) and
``LabelSession.set_mask``/``new_instance`` for the pixels a brush would paint. Then it fine-tunes with
``model.api.train_job`` (what ``app.py train`` runs) and proposes on every image not done with
``model.api.propose_images`` (what ``app.py propose --all`` runs). Nothing writes rows directly.

The labeler, per image (``plan_image``):
- a proposal whose mask IoU with a ground-truth object is at least ACCEPT_IOU, of the right class, with
  keypoints at OKS >= ACCEPT_OKS, is accepted unchanged (one click);
- a proposal overlapping an object at IoU >= MATCH_IOU but not acceptable is corrected: the class (a click),
  the mask (the pixels to repaint, when its IoU is under ACCEPT_IOU) and the keypoints out of tolerance (a
  click each). Where assist exists and the correction costs more than a box, the labeler tries a box on the
  object instead and keeps the cheaper of the two results (paying for the box either way);
- any other proposal is rejected (a click);
- an object nobody proposed is drawn: from nothing, or with assist one box, then the correction of what
  assist found (drawn from nothing after all when that would be cheaper, the box paid).

Unit costs, to turn actions into seconds (``Effort.seconds``):
- DRAW_S = 79 s to draw one instance's mask from nothing: COCO's figure, 22 worker hours per 1,000 instance
  segmentations (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014, section 4.3).
- BOX_S = 7 s for one box: extreme clicking (Papadopoulos et al., "Extreme clicking for efficient object
  annotation", ICCV 2017: 7.0 s per box, against 34.5 s for the classic drag-and-adjust box).
- CLICK_S = 1 s per click: accept, reject, class change, one keypoint placed or moved (the issue's figure).
- Repainting: DRAW_S x pixels repainted / the object's pixels, at most DRAW_S (repainting a whole object
  costs what drawing it does). An assumption: no published figure for brush corrections was found.

Baselines on the very images each round labels: no assist at all (every object drawn, with its keypoints),
and assist without fine-tuning (the first fine-tuned model, v1, for every later round: there are no
pretrained weights offline, so round 1 is unassisted in every arm). Held-out AP is measured on a separate
fixed test set with exact labels. Output: docs/loop.md and PNG plots in docs/loop/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator import canvas  # noqa: E402
from annotator.labeling import LabelSession  # noqa: E402
from annotator.page import Page  # noqa: E402
from bench.plot import line_chart  # noqa: E402
from db import annotations, compare  # noqa: E402
from db import categories as cat_db  # noqa: E402
from db import masks as mask_codec  # noqa: E402
from db.coco_import import import_coco  # noqa: E402
from db.ingest import ingest  # noqa: E402
from db.media import load_rgb  # noqa: E402
from db.store import Settings, Store  # noqa: E402
from model import api  # noqa: E402
from model import evaluate as ev  # noqa: E402
from model.data import labeled_samples  # noqa: E402
from model.predict import Predictor  # noqa: E402
from model.synthetic import LOOP_CATEGORIES, make_loop_coco  # noqa: E402

DRAW_S, BOX_S, CLICK_S = 79.0, 7.0, 1.0
ACCEPT_IOU, ACCEPT_OKS, MATCH_IOU = 0.85, 0.75, 0.5
PROPOSE_MIN_SCORE = 0.3  # app.py propose's default --min-score; the canvas shows every proposal (min score 0)
WORSE_BY = 0.01  # a promoted version whose test segm AP is this much under the one it replaced is "worse"
MISSED_BY = 0.02  # a refused version whose test segm AP is this much over the active one's was "missed"


# --- effort accounting --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Effort:
    pixels: int = 0  # painted or erased
    keypoints: int = 0  # placed, moved or cleared
    actions: int = 0  # clicks, boxes, strokes (one per repaint), drawn instances
    seconds: float = 0.0

    def __add__(self, o: "Effort") -> "Effort":
        return Effort(self.pixels + o.pixels, self.keypoints + o.keypoints, self.actions + o.actions,
                      self.seconds + o.seconds)


def clicks(n: int = 1) -> Effort:
    return Effort(actions=n, seconds=n * CLICK_S)


BOX = Effort(actions=1, seconds=BOX_S)


@dataclasses.dataclass
class Truth:
    """One ground-truth object: category id, full-image boolean mask, flat keypoints or None."""

    category_id: int
    mask: np.ndarray
    keypoints: list | None = None

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def box(self) -> list[float]:
        ys, xs = np.nonzero(self.mask)
        return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]

    @property
    def labeled_keypoints(self) -> int:
        return 0 if not self.keypoints else int(sum(1 for v in self.keypoints[2::3] if v > 0))


@dataclasses.dataclass
class Seen:
    """An instance as the labeler sees it: class, mask, keypoints (a proposal, or what assist found)."""

    category_id: int
    mask: np.ndarray
    keypoints: list | None = None
    score: float = 1.0
    index: int = -1  # its index in the LabelSession (proposals)


def draw_effort(t: Truth) -> Effort:
    """Drawing an object from nothing: its mask (DRAW_S) and each labeled keypoint (a click)."""
    k = t.labeled_keypoints
    return Effort(pixels=t.area, keypoints=k, actions=1 + k, seconds=DRAW_S + k * CLICK_S)


def fix_effort(s: Seen, t: Truth) -> Effort:
    """What turns ``s`` into a label the labeler accepts for ``t`` (nothing for an acceptable one): the
    class, the mask when its IoU is under ACCEPT_IOU (every differing pixel), the keypoints when their OKS is
    under ACCEPT_OKS (each one out of tolerance)."""
    e = Effort()
    if s.category_id != t.category_id:
        e += clicks(1)
    if mask_codec.iou(s.mask, t.mask) < ACCEPT_IOU:
        px = compare.pixels_differing(s.mask, t.mask)
        e += Effort(pixels=px, actions=1, seconds=min(DRAW_S, DRAW_S * px / max(t.area, 1)))
    kps = s.keypoints if s.category_id == t.category_id else None
    similarity = compare.oks(kps, t.keypoints, t.area)
    if similarity is not None and similarity < ACCEPT_OKS:
        n = compare.keypoints_to_fix(kps, t.keypoints, t.area, ACCEPT_OKS)
        e += Effort(keypoints=n, actions=n, seconds=n * CLICK_S)
    return e


def unassisted_effort(truths: list[Truth]) -> Effort:
    total = Effort()
    for t in truths:
        total += draw_effort(t)
    return total


@dataclasses.dataclass
class Plan:
    effort: Effort
    steps: list[tuple]  # ("accept", seen) | ("reject", seen) | ("fix", seen, truth) | ("replace", seen, truth)
    #                     | ("assist", truth) | ("draw", truth)
    accepted_unchanged: int = 0
    proposals: int = 0


def plan_image(proposals: list[Seen], truths: list[Truth], assist: Callable[[Truth], Seen] | None) -> Plan:
    """The labeler's decisions for one image and what they cost (see the module's docstring)."""
    plan = Plan(Effort(), [], proposals=len(proposals))
    order = sorted(proposals, key=lambda s: -s.score)
    free = set(range(len(truths)))
    for s in order:
        ious = {k: mask_codec.iou(s.mask, truths[k].mask) for k in free}
        best = max(ious, key=lambda k: (ious[k], -k), default=None)
        if best is None or ious[best] < MATCH_IOU:
            plan.effort += clicks(1)
            plan.steps.append(("reject", s))
            continue
        free.discard(best)
        t = truths[best]
        fix = fix_effort(s, t)
        if fix.actions == 0:
            plan.effort += clicks(1)
            plan.steps.append(("accept", s))
            plan.accepted_unchanged += 1
        elif assist is None or fix.seconds <= BOX_S + CLICK_S:
            plan.effort += clicks(1) + fix
            plan.steps.append(("fix", s, t))
        else:  # try a box on the object; keep whichever of the two then costs less
            found_fix = fix_effort(assist(t), t)
            use_found = found_fix.seconds < fix.seconds
            plan.effort += BOX + clicks(2) + (found_fix if use_found else fix)
            plan.steps.append(("replace", s, t) if use_found else ("fix", s, t))
    for k in sorted(free):
        t = truths[k]
        draw = draw_effort(t)
        if assist is None:
            plan.effort += draw
            plan.steps.append(("draw", t))
            continue
        found_fix = fix_effort(assist(t), t)
        if found_fix.seconds + CLICK_S < draw.seconds:
            plan.effort += BOX + clicks(1) + found_fix
            plan.steps.append(("assist", t))
        else:  # what assist found is worse than drawing: deleted, and the object drawn after all
            plan.effort += BOX + clicks(1) + draw
            plan.steps.append(("draw", t))
    return plan


# --- doing it through the project's labeling code -----------------------------------------------------------

class _Assist:
    """The canvas's assist interface (annotator.canvas.Assist) over model.api for one model version."""

    def __init__(self, store: Store, helper):
        self.store, self.helper = store, helper

    def assist_box(self, image_id: int, box_xyxy, category_id: int | None = None) -> dict:
        return api.assist_box(self.store, self.helper, image_id, box_xyxy, category_id)

    def assist_point(self, image_id: int, x: float, y: float, category_id: int | None = None) -> dict:
        return api.assist_point(self.store, self.helper, image_id, x, y, category_id)

    def seen(self, image_id: int, h: int, w: int) -> Callable[[Truth], Seen]:
        def ask(t: Truth) -> Seen:
            got = self.assist_box(image_id, t.box, t.category_id)
            return Seen(got["category_id"], mask_codec.decode(got["segmentation"], h, w), got.get("keypoints"))
        return ask


def _do(ls: LabelSession, msg: dict, assist=None) -> str:
    return canvas.apply(Page("bench", user=ls.store.settings.user, session=ls), msg, assist)


def _correct(ls: LabelSession, i: int, t: Truth) -> None:
    """Make instance ``i`` acceptable for ``t`` as a labeler would, and accept it: the class, the mask (the
    brush's result: the object's pixels), the keypoints out of tolerance."""
    s = Seen(ls.instances.category_ids[i], ls.instances.mask(i), ls.instances.keypoints[i])
    if s.category_id != t.category_id:
        _do(ls, {"op": "class", "index": i, "category": t.category_id})
    if mask_codec.iou(s.mask, t.mask) < ACCEPT_IOU:
        ls.set_mask(t.mask, i)
    similarity = compare.oks(ls.instances.keypoints[i], t.keypoints, t.area)
    if similarity is not None and similarity < ACCEPT_OKS:
        names = ls.categories[t.category_id].keypoints
        for j, name in enumerate(names):
            x, y, v = t.keypoints[3 * j:3 * j + 3]
            _do(ls, {"op": "keypoint", "index": i, "name": name, "x": x, "y": y, "v": int(v)})
    if ls.instances.states[i] != "accepted":
        _do(ls, {"op": "accept", "index": i})


def label_image(store: Store, image_id: int, truths: list[Truth], assist: _Assist | None) -> Plan:
    """Open the image, plan, do every step through the canvas's messages and the labeling logic, save."""
    ls = LabelSession(store, image_id)
    shown = [Seen(ls.instances.category_ids[i], ls.instances.mask(i), ls.instances.keypoints[i],
                  ls.instances.scores[i] or 0.0, i) for i in ls.visible(0.0) if ls.instances.states[i] == "proposed"]
    ask = assist.seen(image_id, ls.height, ls.width) if assist is not None else None
    plan = plan_image(shown, truths, ask)
    for step in plan.steps:
        kind = step[0]
        if kind == "accept":
            _do(ls, {"op": "accept", "index": step[1].index})
        elif kind == "reject":
            _do(ls, {"op": "reject", "index": step[1].index})
        elif kind == "fix":
            _correct(ls, step[1].index, step[2])
        elif kind in ("replace", "assist"):
            t = step[-1]
            if kind == "replace":
                _do(ls, {"op": "reject", "index": step[1].index})
            _do(ls, {"op": "assist", "box": t.box, "category": t.category_id}, assist)
            _correct(ls, ls.selected, t)
        else:  # draw
            t = step[1]
            i = ls.new_instance(t.category_id, mask=t.mask)
            for j, name in enumerate(ls.categories[t.category_id].keypoints if t.keypoints else []):
                x, y, v = t.keypoints[3 * j:3 * j + 3]
                if v:
                    _do(ls, {"op": "keypoint", "index": i, "name": name, "x": x, "y": y, "v": int(v)})
    said = _do(ls, {"op": "save"})
    if not said.startswith(f"saved image {image_id}: done"):
        raise RuntimeError(f"image {image_id} was not saved as done: {said}")
    return plan


# --- the rounds -----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Data:
    folder: Path
    truths: dict[str, list[Truth]]  # by file name
    test_samples: list


def make_data(root: Path, pool: int, test: int, size: int, seed: int) -> Data:
    files, coco = make_loop_coco(pool + test, size=size, seed=seed)
    folder, test_dir = root / "pool", root / "test"
    folder.mkdir()
    test_dir.mkdir()
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    truths = {}
    for k, ((name, pix), im) in enumerate(zip(files, coco["images"])):
        Image.fromarray(pix).save((folder if k < pool else test_dir) / name)
        truths[name] = [Truth(a["category_id"], mask_codec.decode(a["segmentation"], size, size), a.get("keypoints"))
                        for a in by_image.get(im["id"], [])]
    test_ids = {im["id"] for im in coco["images"][pool:]}
    test_coco = dict(coco, images=coco["images"][pool:],
                     annotations=[a for a in coco["annotations"] if a["image_id"] in test_ids])
    test_store = Store(Settings(store_dir=root / "test-store"))
    import_coco(test_store, test_coco, test_dir, user="bench")
    samples = labeled_samples(test_store, heldout=False) + labeled_samples(test_store, heldout=True)
    test_store.close()
    return Data(folder, truths, samples)


def new_store(path: Path, data: Data) -> tuple[Store, dict[int, str]]:
    store = Store(Settings(store_dir=path, user="labeler"))
    for c in LOOP_CATEGORIES:
        cat_db.add(store, c["name"], c["supercategory"], c.get("keypoints"), c.get("skeleton"), category_id=c["id"])
    report = ingest(store, [data.folder])
    return store, dict(report.added)


def test_ap(store: Store, data: Data, options: api.ModelOptions) -> dict:
    if api.active_version(store) is None:
        return {}
    return ev.evaluate(api.predictor(store, options), data.test_samples)


def _assist_for(store: Store, options: api.ModelOptions) -> _Assist | None:
    helper = api.assistant(store, options)
    return _Assist(store, helper) if helper is not None else None


def _proposals_of(predictor: Predictor, store: Store, image_id: int) -> list[Seen]:
    """What the model would propose on the image (as propose writes them), without writing anything."""
    im = annotations.images(store, [image_id])[image_id]
    pix = np.asarray(load_rgb(store.media_file(im.media_path)))  # as propose reads it (EXIF orientation)
    (inst,) = predictor.predict([pix], min_score=PROPOSE_MIN_SCORE)
    return [Seen(inst.category_ids[i], inst.mask(i), inst.keypoints[i], inst.scores[i]) for i in range(len(inst))]


def run_arm(order: str, data: Data, root: Path, a, with_fixed_baseline: bool, log) -> dict:
    """One arm: the rounds with queue ``order`` ("shuffled", the default, or "uncertainty") in its own store."""
    name = order
    store, names = new_store(root / name, data)
    options = api.ModelOptions(device="cpu")
    fixed_pred = fixed_assist = None
    rounds = []
    for r in range(1, a.rounds + 1):
        todo = annotations.queue(store, annotations.UNCERTAIN_FIRST if order == "uncertainty" else
                                 annotations.QUEUE_FILTERS[0])  # the default: a fixed shuffle
        batch = todo[:a.per_round]
        version = api.active_version(store)
        metrics = test_ap(store, data, options)
        assist = _assist_for(store, options)
        t0 = time.monotonic()
        done, none_, fixed = Effort(), Effort(), Effort()
        proposals = unchanged = 0
        for iid in batch:
            truths = data.truths[names[iid]]
            if fixed_pred is not None:  # the same image with v1's proposals and assist, nothing written
                fixed += plan_image(_proposals_of(fixed_pred, store, iid), truths,
                                    fixed_assist.seen(iid, a.size, a.size)).effort
            plan = label_image(store, iid, truths, assist)
            done += plan.effort
            none_ += unassisted_effort(truths)
            proposals += plan.proposals
            unchanged += plan.accepted_unchanged
        n = max(1, len(batch))
        row = dict(round=r, images=len(batch), version=version.id if version else None, test=metrics,
                   proposals_per_image=proposals / n, share_unchanged=(unchanged / proposals) if proposals else None,
                   effort=_per(done, n), unassisted=_per(none_, n),
                   fixed=_per(fixed, n) if fixed_pred is not None else None, label_seconds=time.monotonic() - t0)
        log(f"[{name}] round {r}: {len(batch)} images with model {row['version']}: "
            f"{row['effort']['seconds']:.1f} s/image (unassisted {row['unassisted']['seconds']:.1f}"
            + (f", v1 only {row['fixed']['seconds']:.1f}" if row["fixed"] else "") + f"); test {_fmt(metrics)}")
        if r < a.rounds:
            row["train"] = train_round(store, data, options, a, r, metrics, log, name)
            if with_fixed_baseline and fixed_pred is None and api.active_version(store) is not None:
                fixed_pred = api.predictor(store, options)  # v1, kept for every later round
                fixed_assist = _Assist(store, api.assistant(store, options))
        rounds.append(row)
    from db.stats import review_stats

    reviews = [dataclasses.asdict(s) | {"share_unchanged": s.share_unchanged} for s in review_stats(store)]
    store.close()
    return {"order": order, "seed": a.seed, "rounds": rounds, "reviews": reviews}


def train_round(store: Store, data: Data, options: api.ModelOptions, a, r: int, before: dict, log, name: str) -> dict:
    """Fine-tune as the Model tab's button does (model.api.train_job), for about ``a.iterations``
    iterations, then propose on every image not done when a new version became active."""
    n_train = len(annotations.labeled_images(store, heldout=False))
    epochs = max(1, round(a.iterations / max(1, n_train / 4)))
    t0 = time.monotonic()
    res = api.train_job(store, api.TrainOptions(size="tiny", epochs=epochs, seed=a.seed + r, device="cpu"))
    seconds = time.monotonic() - t0
    new = next(v for v in api.list_versions(store) if v.id == res.version_id)
    new_test = ev.evaluate(Predictor.for_version(store, options, new), data.test_samples)  # promoted or not
    after = new_test if res.promoted else before
    worse = bool(res.promoted and before.get("segm") is not None
                 and new_test.get("segm", 0.0) < before["segm"] - WORSE_BY)
    missed = bool(not res.promoted and new_test.get("segm") is not None
                  and new_test["segm"] > (before.get("segm") or 0.0) + MISSED_BY)
    proposed = {}
    if res.promoted:
        proposed = api.propose_images(store, annotations.images_to_propose(store), options,
                                      min_score=PROPOSE_MIN_SCORE)
    out = dict(version=res.version_id, iterations=res.iterations, seconds=seconds, promoted=res.promoted,
               heldout=res.metrics, test_new=new_test, test_after=after, worse=worse, missed=missed,
               reason=(res.metrics or {}).get("promotion", ""), proposed=proposed)
    log(f"[{name}]   fine-tune after round {r}: version {res.version_id}, {res.iterations} iterations, "
        f"{out['seconds']:.0f} s, {'promoted' if res.promoted else 'not promoted'}; its test {_fmt(new_test)}")
    return out


def _per(e: Effort, n: int) -> dict:
    return {"pixels": e.pixels / n, "keypoints": e.keypoints / n, "actions": e.actions / n, "seconds": e.seconds / n}


def _fmt(m: dict) -> str:
    return ", ".join(f"{k} {m[k]:.3f}" for k in ("segm", "bbox", "keypoints") if m.get(k) is not None) or "no model"


# --- the report -----------------------------------------------------------------------------------------------

def report(results: dict, a, seconds: float, out: Path, runs: dict[int, dict] | None = None) -> None:
    """docs/loop.md: with ``runs`` (several seeds), the targets over the seeds first, then the first seed in
    full and every seed's fine-tunes."""
    plots = out.parent / out.stem
    main, rand = results["shuffled"], results.get("uncertainty")
    last = main["rounds"][-1]
    ratio = last["effort"]["seconds"] / last["unassisted"]["seconds"] if last["unassisted"]["seconds"] else None
    segm = [row["test"].get("segm") for row in main["rounds"] if row["test"]]
    rising = all(b > x for x, b in zip(segm, segm[1:])) if len(segm) > 1 else None
    falling = any(b < x for x, b in zip(segm, segm[1:]))
    worse = [f"{name} v{row['train']['version']}" for name, arm in results.items() for row in arm["rounds"]
             if row.get("train", {}).get("worse")]
    missed = [f"{name} v{row['train']['version']}" for name, arm in results.items() for row in arm["rounds"]
              if row.get("train", {}).get("missed")]
    lines = [
        "# The loop, measured",
        "",
        f"Written by `bench/loop.py` on {time.strftime('%Y-%m-%d')}: `{' '.join(['python bench/loop.py'] + sys.argv[1:])}`",
        f"on {platform.node() or 'this machine'} ({platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, CPU), " + (f"in {seconds / 60:.1f} minutes. " if seconds else "from saved results (`--from`). ")
        + f"{a.rounds} rounds of {a.per_round} images, "
        f"a fine-tune of about {a.iterations} iterations (`--size tiny`) after each round but the last, "
        f"{a.pool} images in the pool and {a.test} in the fixed test set, {a.size} px, "
        + (f"seeds {', '.join(map(str, runs))} (each its own data, labeler order and training)." if runs else
           f"seed {a.seed}."),
        "",
        "How the simulated labeler decides and what each action costs: the docstring of `bench/loop.py` (unit "
        f"costs: drawing an instance {DRAW_S:.0f} s, a box {BOX_S:.0f} s, a click {CLICK_S:.0f} s, repainting "
        f"a share of an object that share of {DRAW_S:.0f} s). Accepted unchanged: mask IoU >= {ACCEPT_IOU}, the "
        f"right class, keypoint OKS >= {ACCEPT_OKS}.",
        "",
    ]
    if runs:
        lines += over_seeds(runs) + [f"# Seed {a.seed} in full", ""]
    lines += [
        "## Against the targets",
        "",
        f"- Effort per image in the last round: {last['effort']['seconds']:.1f} s against {last['unassisted']['seconds']:.1f} s "
        f"unassisted: {ratio:.2f} of it (target: at most 0.25)." if ratio is not None else "- No last round.",
        f"- Test segm AP by round: {', '.join('-' if x is None else f'{x:.3f}' for x in segm)}: "
        + ("rising round over round." if rising else
           ("not rising every round: it never falls, and stays where it was in a round whose fine-tune was not "
            "promoted." if not falling else "falling in some round.") if rising is False else "one round only."),
        f"- Versions promoted that were worse on the test set (by more than {WORSE_BY}): "
        + (", ".join(map(str, worse)) if worse else "none") + ".",
        f"- Versions not promoted that were better on the test set (by more than {MISSED_BY}): "
        + (", ".join(map(str, missed)) if missed else "none") + ".",
    ]
    if rand is not None:
        lr = rand["rounds"][-1]
        lines.append(f"- Last round, the default shuffled queue against most uncertain first: {last['effort']['seconds']:.1f} against "
                     f"{lr['effort']['seconds']:.1f} s per image; test segm AP {_ap(last['test'])} against "
                     f"{_ap(lr['test'])}.")
    lines += ["", "## Per round (the default queue: a fixed shuffle)", ""] + _table(main, with_fixed=True)
    if rand is not None:
        lines += ["", "## Per round (queue: most uncertain first)", ""] + _table(rand, with_fixed=False)
    lines += ["", "## Fine-tunes", "",
              "Each version's test segm AP, promoted or not, against the active model's before it (the held-out "
              "split of the store decides promotion; the test set only reports):", "",
              "| arm | after round | version | iterations | seconds | promoted | its test segm AP | active's before | reason |",
              "|---|---|---|---|---|---|---|---|---|"]
    for seed, arms in (runs or {a.seed: results}).items():
        for arm_name, arm in arms.items():
            for row in arm["rounds"]:
                t = row.get("train")
                if t:
                    lines.append(f"| {arm_name}{f' (seed {seed})' if runs else ''} | {row['round']} | {t['version']} | "
                                 f"{t['iterations']} | {t['seconds']:.0f} | {'yes' if t['promoted'] else 'no'} | "
                                 f"{_ap(t['test_new'])} | {_ap(row['test'])} | {t['reason']} |")
    lines += ["", "## The product's own review measures for the same saves (default queue)", "",
              "What the Model tab shows, computed from the review rows the saves above wrote (seconds here are the "
              "simulation's compute time, not a person's):", "",
              "| version | images | proposals reviewed | accepted unchanged | mean IoU | rejected | drawn | assisted | keypoints moved |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in main["reviews"]:
        share = "" if s["share_unchanged"] is None else f"{100 * s['share_unchanged']:.0f}%"
        iou = "" if s["mean_iou"] is None else f"{s['mean_iou']:.3f}"
        lines.append(f"| {s['version_id'] or 'no model'} | {s['images']} | {s['proposals']} | {share} | {iou} | "
                     f"{s['rejected']} | {s['drawn']} | {s['assisted']} | {s['keypoints_moved']} |")
    xs = [row["round"] for row in main["rounds"]]
    effort_series = {"maskloop (shuffled queue)": [(x, row["effort"]["seconds"]) for x, row in zip(xs, main["rounds"])],
                     "no assist": [(x, row["unassisted"]["seconds"]) for x, row in zip(xs, main["rounds"])],
                     "v1 only, no fine-tuning": [(x, row["fixed"]["seconds"] if row["fixed"] else None)
                                                 for x, row in zip(xs, main["rounds"])]}
    ap_series = {"shuffled queue": [(x, row["test"].get("segm")) for x, row in zip(xs, main["rounds"])]}
    for seed, arms in (runs or {}).items():
        if seed != a.seed:
            ap_series[f"shuffled queue, seed {seed}"] = [(row["round"], row["test"].get("segm"))
                                                         for row in arms["shuffled"]["rounds"]]
    if rand is not None:
        effort_series["maskloop (uncertain first)"] = [(row["round"], row["effort"]["seconds"]) for row in rand["rounds"]]
        ap_series["uncertain first"] = [(row["round"], row["test"].get("segm")) for row in rand["rounds"]]
    line_chart(plots / "effort.png", "Estimated labeling seconds per image", "round", "seconds", effort_series)
    line_chart(plots / "ap.png", "Test segm AP of the model that proposed", "round", "segm AP", ap_series, y_max=1.0)
    rel = plots.name
    lines += ["", f"![seconds per image]({rel}/effort.png)", "", f"![test segm AP]({rel}/ap.png)", "",
              "## Reading the product's measures", "",
              "The Model tab's *Review measures per model version* come from every save in the Label tab: each "
              "save counts for the version whose proposals were on the image (*no model*: there were none).",
              "",
              "- **accepted unchanged**: proposals saved exactly as the model made them, of those reviewed. It "
              "should rise from one version to the next.",
              "- **mean IoU proposal→saved**: how much of an accepted proposal's mask survived. 1.0 means no pixel "
              "was changed.",
              "- **keypoints moved / rejected / drawn / assisted per image**: what the labeler still had to do. "
              "Drawn from nothing should fall as the model finds more objects.",
              "- **seconds per image**: active time from opening an image to saving it. Pauses of over a minute "
              "between two actions are left out.",
              "",
              "A fine-tune paid off when the version after it has a higher share accepted unchanged and fewer "
              "seconds per image than the one before. The default queue is a fixed shuffle, so each version "
              "sees a random sample of the images; with \"most uncertain first\" it sees the hardest ones, which "
              "makes later versions look worse than they are.",
              ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    (plots / "results.json").write_text(json.dumps(runs or results, indent=1, default=float), encoding="utf-8")


def _ap(m: dict) -> str:
    return "-" if not m or m.get("segm") is None else f"{m['segm']:.3f}"


def _table(arm: dict, with_fixed: bool) -> list[str]:
    head = ("| round | model | test segm / bbox / kp AP | proposals / image | accepted unchanged | pixels repainted "
            "/ image | keypoints / image | actions / image | seconds / image | unassisted s / image"
            + (" | v1 only s / image |" if with_fixed else " |"))
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in arm["rounds"]:
        m, e = row["test"], row["effort"]
        aps = " / ".join("-" if m.get(k) is None else f"{m[k]:.3f}" for k in ("segm", "bbox", "keypoints")) if m else "-"
        share = "-" if row["share_unchanged"] is None else f"{100 * row['share_unchanged']:.0f}%"
        cells = [row["round"], row["version"] or "none", aps, f"{row['proposals_per_image']:.1f}", share,
                 f"{e['pixels']:.0f}", f"{e['keypoints']:.1f}", f"{e['actions']:.1f}", f"{e['seconds']:.1f}",
                 f"{row['unassisted']['seconds']:.1f}"]
        if with_fixed:
            cells.append("-" if row["fixed"] is None else f"{row['fixed']['seconds']:.1f}")
        out.append("| " + " | ".join(map(str, cells)) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=300, help="fine-tune iterations per round (about)")
    ap.add_argument("--pool", type=int, default=200, help="unlabeled images in the store")
    ap.add_argument("--test", type=int, default=60, help="images in the fixed test set")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None,
                    help="several seeds, comma-separated (e.g. 0,1,2): each runs the whole loop on its own data; "
                         "the report opens with the targets over the seeds (mean and spread), then seed by seed")
    ap.add_argument("--orders", default="shuffled,uncertainty", help="queue orders to run, comma-separated")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 4 images, 8 iterations: a smoke test")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "loop.md")
    ap.add_argument("--from", dest="saved", type=Path, nargs="+", default=None,
                    help="write the report from saved results (the results.json of earlier runs, of the same "
                         "settings), without running: a seed run again replaces the same seed of a file before it")
    a = ap.parse_args(argv)
    if a.saved:
        runs = {}
        for path in a.saved:
            data = json.loads(path.read_text(encoding="utf-8"))
            if "shuffled" in data:  # one seed's arms
                runs[int(data["shuffled"]["seed"])] = data
            else:
                runs.update({int(k): v for k, v in data.items()})
        first = min(runs)
        a.seed = first
        report(runs[first], a, 0.0, a.out, runs if len(runs) > 1 else None)
        print(f"wrote {a.out} from {len(runs)} seed(s) of saved results")
        return 0
    if a.quick:
        a.rounds, a.per_round, a.iterations, a.pool, a.test = 2, 4, 8, 12, 6
    orders = [o.strip() for o in a.orders.split(",") if o.strip()]
    if not orders or orders[0] != "shuffled" or not set(orders) <= {"shuffled", "uncertainty"}:
        ap.error("--orders: shuffled first, then optionally uncertainty")
    if min(a.rounds, a.per_round, a.iterations, a.pool, a.test) < 1 or a.rounds * a.per_round > a.pool:
        ap.error("--rounds x --per-round must fit in --pool, every count at least 1")
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()] if a.seeds else [a.seed]
    except ValueError:
        ap.error(f"--seeds {a.seeds!r}: whole numbers, comma-separated")
    if not seeds or len(set(seeds)) != len(seeds):
        ap.error("--seeds: at least one, none twice")
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"{time.monotonic() - t0:7.0f}s {msg}", flush=True)

    runs = {}
    for seed in seeds:
        a.seed = seed
        torch.manual_seed(seed)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            data = make_data(root, a.pool, a.test, a.size, seed)
            runs[seed] = {o: run_arm(o, data, root, a, with_fixed_baseline=o == "shuffled", log=log) for o in orders}
        log(f"seed {seed} done")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.seed = seeds[0]
    report(runs[seeds[0]], a, time.monotonic() - t0, a.out, runs if len(seeds) > 1 else None)
    log(f"wrote {a.out}")
    return 0


def over_seeds(runs: dict[int, dict]) -> list[str]:
    """The targets over several seeds: the last round's effort against unassisted, test segm AP by round,
    and the promotion decisions the test set disagrees with; mean and spread (sample standard deviation,
    min to max), seed by seed."""
    def spread(xs: list[float]) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        sd = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
        return f"{np.mean(xs):.3f} ± {sd:.3f} ({min(xs):.3f} to {max(xs):.3f})"

    ratios, rises, worse, missed, rows = [], [], [], [], []
    for seed, arms in runs.items():
        arm = arms["shuffled"]
        last = arm["rounds"][-1]
        ratio = last["effort"]["seconds"] / last["unassisted"]["seconds"] if last["unassisted"]["seconds"] else None
        segm = [row["test"].get("segm") if row["test"] else None for row in arm["rounds"]]
        known = [x for x in segm if x is not None]
        rise = all(b > x for x, b in zip(known, known[1:]))
        trains = [row["train"] for row in arm["rounds"] if row.get("train")]
        w = [f"v{t['version']}" for t in trains if t["worse"]]
        m = [f"v{t['version']}" for t in trains if t["missed"]]
        ratios.append(ratio)
        rises.append(rise)
        worse += w
        missed += m
        rows.append(f"| {seed} | {'-' if ratio is None else f'{ratio:.3f}'} | "
                    f"{', '.join('-' if x is None else f'{x:.3f}' for x in segm)} | {'yes' if rise else 'no'} | "
                    f"{sum(t['promoted'] for t in trains)} of {len(trains)} | {', '.join(w) or 'none'} | "
                    f"{', '.join(m) or 'none'} |")
    n_rounds = max(len(arms["shuffled"]["rounds"]) for arms in runs.values())
    per_round = [spread([arms["shuffled"]["rounds"][k]["test"].get("segm")
                         for arms in runs.values() if k < len(arms["shuffled"]["rounds"])
                         and arms["shuffled"]["rounds"][k]["test"]]) for k in range(n_rounds)]
    return [
        f"## Over {len(runs)} seeds (the default shuffled queue)", "",
        f"- Last-round effort against unassisted: {spread(ratios)} (target: at most 0.25 in every seed).",
        f"- Test segm AP rising in every round that had a model before it: {sum(rises)} of {len(runs)} seeds.",
        f"- Promoted versions worse on the test set by more than {WORSE_BY}: {len(worse)} (target: none).",
        f"- Refused versions better on the test set by more than {MISSED_BY}: {len(missed)} (target: none).",
        "", "Test segm AP by round (mean ± sample standard deviation, min to max, over the seeds): "
        + "; ".join(f"round {k + 1}: {v}" for k, v in enumerate(per_round)) + ".", "",
        "| seed | last-round effort / unassisted | test segm AP by round | rising | promoted | promoted but worse "
        "| refused but better |", "|---|---|---|---|---|---|---|"] + rows + [
        "", "Each seed's fine-tunes, with the share of held-out resamples that decided them, are in the "
        "*Fine-tunes* tables below.", ""]


if __name__ == "__main__":
    sys.exit(main())
