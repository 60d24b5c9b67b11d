"""maskloop command line: parse arguments, wire the parts, launch. Holds no logic of its own."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path


def _store_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument("--weights", default="coco" if top else argparse.SUPPRESS, metavar="coco|none|PATH",
                   help="round-0 weights: torchvision's COCO weights (default), none, or a local checkpoint")
    p.add_argument("--device", default="auto" if top else argparse.SUPPRESS, help="auto, cpu or cuda")
    # On subcommands the defaults are suppressed, so `--store` works before or after the command.
    p.add_argument("--store", default="labelstore" if top else argparse.SUPPRESS,
                   help="folder holding labels.db and media (default ./labelstore)")
    p.add_argument("--db", default=None if top else argparse.SUPPRESS, metavar="URL",
                   help="database URL (e.g. postgresql+psycopg://...) instead of the store's SQLite file")


def _ui_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    """The UI's options, on the top level and on `ui` (suppressed there, so they work before or after it)."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--max-upload-mb", type=float, default=d(None), metavar="MB",
                   help="refuse UI uploads larger than this many MiB (default 2048, i.e. 2 GiB)")
    p.add_argument("--user-upload-mb", type=float, default=d(None), metavar="MB",
                   help="what one login may upload within 90 minutes, as long as the UI keeps uploads (default "
                        "8192 MiB, or --max-upload-mb if larger)")
    p.add_argument("--user-upload-files", type=int, default=d(None), metavar="N",
                   help="files one login may upload within 90 minutes (default 10000)")
    p.add_argument("--trusted-proxy", action="append", default=d([]), metavar="ADDR",
                   help="a reverse proxy (IP address or network) whose X-Forwarded-For names the client, for the "
                        "login's per-client delays (repeatable; default none: the connecting address counts)")
    p.add_argument("--open-to-everyone-as-admin", action="store_true", default=d(False),
                   help="serve --share or a --host other than this machine without a login (refused otherwise): "
                        "everyone who reaches it is an admin")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    from db.formats import FORMATS

    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    parser = argparse.ArgumentParser(prog="maskloop" if called == "maskloop" else "app.py",  # (the console script)
                                     description="maskloop: label instance masks and keypoints")
    _store_args(parser, top=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="an admin account for the login (repeatable); accounts with roles: app.py user add")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    _ui_args(parser, top=True)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("ui", help="start the labeling UI (the default)")
    _store_args(p)
    _ui_args(p)

    p = sub.add_parser("import-images", help="import image files, folders (recursive) and zip archives")
    _store_args(p)
    p.add_argument("paths", nargs="+")

    p = sub.add_parser("import-coco", help="import a COCO instances / person_keypoints file")
    _store_args(p)
    p.add_argument("annotations")
    p.add_argument("--images", required=True, help="folder the file_name fields are relative to")
    p.add_argument("--as-proposals", action="store_true", help="import the labels as proposals to review")
    p.add_argument("--needs-review", action="store_true",
                   help="the imported labels wait in the review queue (by default imported labels are taken as "
                        "reviewed)")

    p = sub.add_parser("assign", help="hand images to a labeler (the queues hand them to nobody else), take "
                                      "them back, or list who holds what")
    _store_args(p)
    p.add_argument("user", nargs="?", help="whom to hand the images to (with --clear: whose to take back)")
    p.add_argument("--folder", help="images whose file name starts with this folder")
    p.add_argument("--category", help="images holding an annotation of this category (name or id)")
    p.add_argument("--status", choices=["new", "proposed", "in_review", "done"], help="images with this status")
    p.add_argument("--ids", help="image ids: 3,5,9-12")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--clear", action="store_true", help="take back the assignments of the images picked (and "
                                                        "of USER only, when given)")
    g.add_argument("--list", action="store_true", help="list who holds and who is assigned what")

    p = sub.add_parser("export", aliases=["export-coco"],
                       help="export the dataset as COCO JSON (OUT.zip: with images) or as a YOLO dataset (a new "
                            "folder OUT, or OUT.zip); export-coco is export --format coco")
    _store_args(p)
    p.add_argument("out")
    p.add_argument("--format", choices=list(FORMATS), default="coco", help="coco (default) or yolo")
    p.add_argument("--yolo-task", choices=["auto", "seg", "pose"], default=None,
                   help="--format yolo: seg (polygons, every category), pose (box and keypoints, the categories "
                        "with keypoints) or auto (default: pose when every category has keypoints, else seg)")
    p.add_argument("--images-dir", default=None, help="--format coco: also copy the images into this folder")
    p.add_argument("--include-proposals", action="store_true",
                   help="add unreviewed proposals, with score, and the images they are on")
    p.add_argument("--all-images", action="store_true",
                   help="write every image, also those not labeled yet (COCO reads an image without "
                        "annotations as a negative: by default only images whose labels are done are written)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--polygons", action="store_true",
                   help="--format coco: convert masks to polygons where the polygons give back the mask's very "
                        "pixels (a mask with a hole, and crowd regions, stay RLE; the summary names them)")
    g.add_argument("--rle", action="store_true", help="--format coco: convert polygons to RLE")

    p = sub.add_parser("stats", help="print the store's counts")
    _store_args(p)
    p.add_argument("--by-user", action="store_true",
                   help="who did what instead: per labeler and day (UTC), newest first: images saved, seconds per "
                        "image, share of judged saves sent back, share of proposals accepted unchanged")
    p.add_argument("--since", type=_day, default=None, metavar="YYYY-MM-DD", help="--by-user: from this day (UTC)")
    p.add_argument("--until", type=_day, default=None, metavar="YYYY-MM-DD",
                   help="--by-user: up to this day (UTC), included")

    p = sub.add_parser("propose", help="run the active model and write proposals to review")
    _store_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--image", type=int, action="append", help="an image id (repeatable)")
    g.add_argument("--all", action="store_true", help="every image not marked done")
    g.add_argument("--worker", action="store_true",
                   help="claim images through the database and propose on them, with any number of other "
                        "workers on the same store (other processes or machines), until stopped")
    p.add_argument("--min-score", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--claim", type=int, default=16, help="--worker: images claimed at a time")
    p.add_argument("--claim-seconds", type=float, default=600.0,
                   help="--worker: a claim expires after this long, so a dead worker's images are taken over")
    p.add_argument("--once", action="store_true", help="--worker: stop when nothing is left to claim")
    p.add_argument("--name", default=None, help="--worker: this worker's name (default host:pid)")

    p = sub.add_parser("train", help="fine-tune the model on the accepted labels")
    _store_args(p)
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training labels (default: as many as fit in --max-minutes; 10 without it)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="train for this long (the learning-rate schedule is planned over it), or stop at --epochs "
                        "if that comes first")
    p.add_argument("--size", choices=["full", "tiny"], default=None,
                   help="model configuration (default: the active model's; tiny when there is none)")
    p.add_argument("--promote", choices=["better", "always"], default="better")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")

    p = sub.add_parser("models", help="list model versions with their held-out metrics")
    _store_args(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("activate", help="make a model version the active one")
    _store_args(p)
    p.add_argument("version", type=int)

    p = sub.add_parser("demo", help="fill a store with synthetic images and held-out labels (offline)")
    _store_args(p)
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--labeled", type=int, default=48, help="training images that come labeled")
    p = sub.add_parser("user", help="accounts for the login, each with a role (labeler, reviewer, admin)",
                       description="With any account in the store, the UI asks for a login and each person may "
                                   "do only what their role allows: a labeler labels; a reviewer also approves "
                                   "or sends back others' labels; an admin also imports, trains, activates "
                                   "models, edits categories and exports. Passwords are read from the "
                                   "terminal (asked twice), or as one line from standard input.")
    _store_args(p)
    usub = p.add_subparsers(dest="user_command", required=True)
    u = usub.add_parser("add", help="add an account")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=["labeler", "reviewer", "admin"])
    u = usub.add_parser("role", help="change an account's role")
    u.add_argument("name")
    u.add_argument("role", choices=["labeler", "reviewer", "admin"])
    u = usub.add_parser("password", help="set a new password")
    u.add_argument("name")
    u = usub.add_parser("remove", help="remove an account (what it did stays recorded under its name)")
    u.add_argument("name")
    usub.add_parser("list", help="list the accounts")
    return parser


def open_store(args, first=None):
    """The store; ``first(store)`` runs before anything is said (the recovery's notes)."""
    from db.recovery import recover
    from db.store import Settings, Store

    store = Store(Settings(store_dir=Path(args.store), db_url=args.db))
    if first is not None:
        first(store)
    for note in recover(store):  # after a crash or a kill: nothing half-done stays behind
        print(f"note: {note}", file=sys.stderr)
    return store


def model_options(args):
    from model.api import ModelOptions

    return ModelOptions(device=args.device, weights=args.weights)


def round0(store, args, say: bool = True) -> str | None:
    """Register torchvision's COCO networks as round 0 when there is no model yet. Offline, returns why not
    (and, with ``say``, prints it as one note line); the caller decides whether that helps its user."""
    from model.api import WeightsUnavailable, active_version, ensure_round0

    before = active_version(store)
    if before is not None and args.weights not in ("coco", "none"):
        print(f"note: the store already has a model (version {before.id}); --weights {args.weights} is used only "
              "by a store without one (app.py activate VERSION switches models)", file=sys.stderr)
    try:
        ensure_round0(store, model_options(args))
    except WeightsUnavailable as e:
        if say:
            print(f"note: {e}", file=sys.stderr)
        return str(e)
    return None


def _progress(desc: str, total: int | None):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=None)
    return bar, (lambda n, name: bar.update(n - bar.n))


def cmd_import_images(args) -> int:
    from db.ingest import count_sources, ingest

    store = open_store(args)
    bar, cb = _progress("importing", count_sources(args.paths))
    with bar:
        report = ingest(store, args.paths, progress=cb)
    print("\n".join(report.lines()))
    return 1 if report.skipped else 0


def cmd_import_coco(args) -> int:
    from db.coco_import import import_coco, load_json, summary

    store = open_store(args)
    data = load_json(args.annotations)
    total = len(data.get("images", [])) if isinstance(data, dict) and isinstance(data.get("images"), list) else None
    bar, cb = _progress("reading images", total)
    with bar:
        result = import_coco(store, data, args.images, as_proposals=args.as_proposals,
                             needs_review=args.needs_review, progress=cb)
    print(f"{summary(result)} from {args.annotations}")
    return 0


def cmd_export(args) -> int:
    from db.errors import UserError
    from db.formats import FORMATS

    given = {"coco": {"--images-dir": args.images_dir, "--polygons": args.polygons, "--rle": args.rle},
             "yolo": {"--yolo-task": args.yolo_task}}  # each format's own options, as typed
    wrong = [o for fmt, opts in given.items() if fmt != args.format for o, v in opts.items() if v]  # another's
    if wrong:
        raise UserError(f"{', '.join(wrong)}: not an option of --format {args.format}"
                        + (" (a YOLO export always holds its images and polygons)" if args.format == "yolo" else ""))
    options = {"coco": lambda: {"images_dir": args.images_dir,
                                "seg_format": "polygons" if args.polygons else "rle" if args.rle else "asis"},
               "yolo": lambda: {"task": args.yolo_task or "auto"}}.get(args.format, dict)()  # (a format of none)
    f = FORMATS[args.format]
    store = open_store(args)
    r = f.export(store, args.out, include_proposals=args.include_proposals, all_images=args.all_images, **options)
    print(f"wrote {args.out}: {f.summary(r)}")
    for line in r["notes"]:
        print(line)
    return 0


def cmd_stats(args) -> int:
    from db.stats import labeler_lines, labeler_stats, stats

    store = open_store(args)
    if args.by_user:
        print("\n".join(labeler_lines(labeler_stats(store, args.since, args.until))))
    else:
        print("\n".join(stats(store).lines()))
    return 0


def cmd_propose(args) -> int:
    from model.api import images_to_propose, predictor as make_predictor, propose_images, skipped_lines

    from model.api import active_version

    store = open_store(args)
    offline = round0(store, args, say=False)
    if offline and active_version(store) is None:  # one line that says what to do, not a note and an error
        print("error: no model to propose with: the COCO weights could not be downloaded (offline?) and nothing "
              "was fine-tuned yet; run app.py train --size tiny first", file=sys.stderr)
        return 2
    options = model_options(args)
    if args.worker:
        return _propose_worker(store, options, args)
    predictor = make_predictor(store, options, batch_size=args.batch_size)
    if predictor.note():
        print(f"note: {predictor.note()}", file=sys.stderr)
    ids = images_to_propose(store) if args.all else args.image
    bar, _ = _progress("proposing", len(ids))
    with bar:
        r = propose_images(store, ids, options, min_score=args.min_score, predictor=predictor,
                           progress=lambda n, total: bar.update(n - bar.n))
    done = r["images"] - len(r["skipped"])
    print(f"wrote {r['proposals']} proposal(s) on {done} image(s) with model version {predictor.version.id}")
    if r["skipped"]:  # the rest went on; each is named, and the reason stays on it (app.py stats)
        print("\n".join(skipped_lines(store, r["skipped"])))
    if done and not r["proposals"]:  # say why, and what to do
        ap = (predictor.version.metrics or {}).get("segm")
        print(f"no detection scored --min-score {args.min_score} or more"
              + (f"; this model's held-out mask AP is {ap:.3f}" if isinstance(ap, (int, float)) else "")
              + ". The images stay in the 'to label' queue: label some by hand (the brush, polygon or assist "
                "tools), fine-tune again (app.py train), or try a lower --min-score.")
    return 1 if r["skipped"] else 0


def _propose_worker(store, options, args) -> int:
    import os
    import socket

    from model.api import propose_worker, skipped_lines

    if args.claim < 1 or not args.claim_seconds > 0:
        print("error: --claim must be at least 1 and --claim-seconds above 0", file=sys.stderr)
        return 2
    name = args.name or f"{socket.gethostname()}:{os.getpid()}"
    print(f"worker {name}: claiming up to {args.claim} image(s) at a time"
          + ("; stops when nothing is left" if args.once else "; Ctrl+C stops"), flush=True)

    def echo(ids, r):
        done = [i for i in ids if i not in r["skipped"]]
        if done:
            print(f"worker {name}: proposed on image(s) {', '.join(map(str, done))}: {r['proposals']} proposal(s)",
                  flush=True)
        for line in skipped_lines(store, r["skipped"]):  # recorded on the image; the worker goes on
            print(f"worker {name}: {line}", flush=True)

    try:
        total = propose_worker(store, options, name, claim=args.claim, claim_seconds=args.claim_seconds,
                               min_score=args.min_score, once=args.once, echo=echo)
    except KeyboardInterrupt:
        print(f"worker {name}: stopped", flush=True)
        return 0
    print(f"worker {name}: {total['proposals']} proposal(s) on {total['images']} image(s)"
          + (f", {total['skipped']} skipped (named above)" if total["skipped"] else ""), flush=True)
    return 1 if total["skipped"] else 0


def cmd_train(args) -> int:
    from model.api import (DEFAULT_EPOCHS, TrainOptions, measured, quality_verdict, skipped_lines, train_as_other_rank,
                           train_job)

    store = open_store(args)
    opts = TrainOptions(epochs=args.epochs, max_minutes=args.max_minutes, size=args.size, promote=args.promote,
                        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, device=args.device,
                        weights=args.weights)
    other = train_as_other_rank(store, opts)  # under torchrun, a rank but 0: it trains beside rank 0, which reports
    if other is not None:
        return 0 if other else 1
    # a tiny model never starts from the COCO networks: no download to try, nothing to say
    offline = round0(store, args, say=False) if args.size != "tiny" else None
    if offline and args.size == "full":
        print("note: the COCO weights could not be downloaded (offline?): the full model starts from scratch "
              "and needs many more labels; --size tiny trains in minutes", file=sys.stderr)
    from tqdm import tqdm

    limit = f", stopping after {opts.max_minutes:g} min at the latest" if opts.max_minutes else ""
    tty = sys.stderr.isatty()
    bar = tqdm(desc="training", unit="it", file=sys.stderr, disable=not tty)
    said = {"started": False, "at": 0.0}

    def echo(p):
        if not said["started"]:  # the job exists now (a second one is refused before this)
            what = (f"for {opts.max_minutes:g} min" if opts.epochs is None and opts.max_minutes else
                    f"for {opts.epochs or DEFAULT_EPOCHS} epoch(s){limit}")
            print(f"fine-tuning {what}; the held-out evaluation follows", file=sys.stderr)
            said["started"] = True
        if not tty:  # a log: one plain line per phase and every 30 s
            now = time.monotonic()
            if p.phase != "training" or now - said["at"] >= 30 or p.iteration == p.total:
                loss = f", loss {sum(p.losses.values()):.3f}" if p.losses else ""
                eta = f", ETA {p.eta / 60:.1f} min" if p.phase == "training" and p.iteration else ""
                print(f"{p.phase}: iteration {p.iteration}/{p.total}{loss}{eta}", file=sys.stderr, flush=True)
                said["at"] = now
            return
        if p.phase not in ("training", "evaluating"):  # reading the labels, building the model
            bar.set_description(p.phase, refresh=True)
            return
        bar.set_description(p.phase, refresh=False)
        bar.total = p.total
        bar.set_postfix(loss=f"{sum(p.losses.values()):.3f}" if p.losses else p.phase, refresh=False)
        bar.update(p.iteration - bar.n)

    with bar:
        r = train_job(store, opts, echo=echo)
    if r is None:
        print("cancelled; the active model is unchanged")
        return 1
    for w in r.warnings:
        print(f"warning: {w}")
    for line in skipped_lines(store, r.skipped):  # left out of the run; the reason stays on the image
        print(line)
    fmt = lambda m: ", ".join(f"{k} AP {v:.3f}" for k, v in (m or {}).items() if k in ("bbox", "segm", "keypoints") and v is not None) or "n/a"  # noqa: E731
    print(f"version {r.version_id}: {r.iterations} iterations in {r.seconds:.0f} s; held-out {fmt(r.metrics)}")
    print(f"active model before: {fmt(r.parent_metrics)}")
    print(f"verdict: {quality_verdict(r.metrics)}")
    why = r.metrics.get("promotion")
    print(("promoted to active" if r.promoted else "not promoted: not better than the active model beyond the "
           f"noise (app.py activate {r.version_id} to use it anyway)" if measured(r.metrics) else
           "not promoted: no held-out labels to compare it with the active version on (label some of the held-out "
           f"images, one in five by id, and train again; or app.py activate {r.version_id})")
          + (f"; {why}" if why else ""))
    return 1 if r.skipped else 0


def cmd_models(args) -> int:
    import json

    from model.api import list_versions

    rows = [dict(id=v.id, parent=v.parent_id, size=v.size, active=v.is_active, promoted=v.promoted,
                 images_used=v.images_used, train_seconds=v.train_seconds, metrics=v.metrics,
                 parent_metrics=v.parent_metrics, created_at=v.created_at.isoformat(timespec="seconds"), note=v.note)
            for v in list_versions(open_store(args))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no model versions yet: app.py train --size tiny")
    for r in rows:
        m = r["metrics"] or {}
        aps = "  ".join(f"{k} {m[k]:.3f}" if m.get(k) is not None else f"{k} -" for k in ("bbox", "segm", "keypoints"))
        print(f"{'*' if r['active'] else ' '} v{r['id']:<4} {r['size']:<5} parent {str(r['parent'] or '-'):<4} "
              f"images {r['images_used']:<5} {aps}  {r['created_at']}")
    return 0


def cmd_activate(args) -> int:
    from model.api import activate

    mv = activate(open_store(args), args.version)
    print(f"version {mv.id} is now the active model")
    return 0


def cmd_demo(args) -> int:
    from model.api import fill_demo

    r = fill_demo(open_store(args), n_images=args.images, labeled_train=args.labeled)
    print(f"demo store {args.store}: {r['labeled']} labeled images ({r['heldout']} held out for evaluation), "
          f"{r['unlabeled']} unlabeled.\nNext: app.py --store {args.store} train --size tiny --epochs 40 "
          "(about 4 min on 2 cores), "
          f"then app.py --store {args.store} propose --all, then open the UI: app.py --store {args.store}")
    return 0


def cmd_ui(args) -> int:
    from annotator.access import door
    from annotator.server import has_login, launch

    def open_door(store):  # refused, or said on the first line, before anything else happens
        said = door(args.host, args.share, has_login(store, args.auth), args.open_to_everyone_as_admin)
        if said:
            print(said, file=sys.stderr, flush=True)

    store = open_store(args, first=open_door)
    round0(store, args)
    launch(store, host=args.host, port=args.port, auth=args.auth, share=args.share, max_upload_mb=args.max_upload_mb,
           options=model_options(args), trusted_proxies=args.trusted_proxy,
           open_to_everyone=args.open_to_everyone_as_admin, user_upload_mb=args.user_upload_mb,
           user_upload_files=args.user_upload_files)
    return 0


def read_password(name: str) -> str:
    """A new password: asked twice on a terminal, else one line of standard input."""
    import getpass

    from db.errors import UserError

    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise UserError("the two passwords differ; nothing was changed")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user(args) -> int:
    from db import users
    from db.errors import UserError

    store = open_store(args)
    if args.user_command == "list":
        for a in users.accounts(store):
            print(f"{a.name}\t{a.role}\tsince {a.created_at:%Y-%m-%d}")
        return 0
    if args.user_command == "add":
        users.check_name(args.name)
        first = users.count(store) == 0
        users.add(store, args.name, args.role, read_password(args.name))
        print(f"added {args.name} ({args.role})")
        if first:
            print("this store now has an account: the UI asks for a login from its next start", file=sys.stderr)
    elif args.user_command == "role":
        users.set_role(store, args.name, args.role)
        print(f"{args.name} is now a {args.role} (in effect at once, also for a running UI)")
    elif args.user_command == "password":
        if users.role_of(store, args.name) is None:
            raise UserError(f"no user {args.name!r}")
        users.set_password(store, args.name, read_password(args.name))
        print(f"new password set for {args.name}")
    else:
        users.remove(store, args.name)
        print(f"removed {args.name}")
    return 0


def cmd_assign(args) -> int:
    from db import claims
    from db.errors import UserError

    store = open_store(args)
    if args.list:
        print("\n".join(claims.holds_lines(store)))
        return 0
    picked = dict(folder=args.folder, category=args.category, status=args.status, ids=args.ids)
    if args.clear:
        everything = not any(picked.values())
        n = claims.unassign(store, None if everything else claims.matching(store, **picked), user=args.user)
        print(f"took back {n} assignment(s)")
        return 0
    if not args.user:
        raise UserError("assign to whom? app.py assign USER [--folder F] [--category C] [--status S] [--ids 1,5-9]")
    if not any(picked.values()):
        raise UserError("which images? give --folder, --category, --status or --ids")
    n = claims.assign(store, args.user, claims.matching(store, **picked), by="app.py assign")
    print(f"assigned {n} image(s) to {args.user}")
    return 0


COMMANDS = {
    None: cmd_ui,
    "ui": cmd_ui,
    "import-images": cmd_import_images,
    "import-coco": cmd_import_coco,
    "export": cmd_export,
    "export-coco": cmd_export,  # (the old name: export --format coco)
    "stats": cmd_stats,
    "propose": cmd_propose,
    "train": cmd_train,
    "models": cmd_models,
    "activate": cmd_activate,
    "demo": cmd_demo,
    "user": cmd_user,
    "assign": cmd_assign,
}


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are a user's mistake: printed as one message, never as a traceback."""
    from db.coco_import import CocoRejected
    from db.errors import UserError

    return (CocoRejected, UserError, FileNotFoundError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
