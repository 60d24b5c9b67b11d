"""maskloop command line: parse arguments, wire the parts, launch. Holds no logic of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _store_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    # On subcommands the defaults are suppressed, so `--store` works before or after the command.
    p.add_argument("--store", default="labelstore" if top else argparse.SUPPRESS,
                   help="folder holding labels.db and media (default ./labelstore)")
    p.add_argument("--db", default=None if top else argparse.SUPPRESS, metavar="URL",
                   help="database URL (e.g. postgresql+psycopg://...) instead of the store's SQLite file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="maskloop: label instance masks and keypoints")
    _store_args(parser, top=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="require a login (repeatable)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("ui", help="start the labeling UI (the default)")
    _store_args(p)

    p = sub.add_parser("import-images", help="import image files, folders (recursive) and zip archives")
    _store_args(p)
    p.add_argument("paths", nargs="+")

    p = sub.add_parser("import-coco", help="import a COCO instances / person_keypoints file")
    _store_args(p)
    p.add_argument("annotations")
    p.add_argument("--images", required=True, help="folder the file_name fields are relative to")
    p.add_argument("--as-proposals", action="store_true", help="import the labels as proposals to review")

    p = sub.add_parser("export-coco", help="export the dataset as COCO JSON (OUT.zip: with images)")
    _store_args(p)
    p.add_argument("out")
    p.add_argument("--images-dir", default=None, help="also copy the images into this folder")
    p.add_argument("--include-proposals", action="store_true", help="add unreviewed proposals, with score")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--polygons", action="store_true", help="convert masks to polygons (crowd regions stay RLE)")
    g.add_argument("--rle", action="store_true", help="convert polygons to RLE")

    p = sub.add_parser("stats", help="print the store's counts")
    _store_args(p)
    return parser


def open_store(args):
    from db.store import Settings, Store

    return Store(Settings(store_dir=Path(args.store), db_url=args.db))


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
    from db.coco_import import import_coco, load_json

    store = open_store(args)
    data = load_json(args.annotations)
    total = len(data.get("images", [])) if isinstance(data, dict) and isinstance(data.get("images"), list) else None
    bar, cb = _progress("reading images", total)
    with bar:
        result = import_coco(store, data, args.images, as_proposals=args.as_proposals, progress=cb)
    print(f"imported {result['images']} image(s), {result['annotations']} annotation(s), "
          f"{result['categories']} categor(y/ies) from {args.annotations}")
    return 0


def cmd_export_coco(args) -> int:
    from db.coco_export import export

    store = open_store(args)
    fmt = "polygons" if args.polygons else "rle" if args.rle else "asis"
    r = export(store, args.out, images_dir=args.images_dir, include_proposals=args.include_proposals,
               seg_format=fmt)
    print(f"wrote {args.out}: {r['images']} image(s), {r['annotations']} annotation(s), "
          f"{r['categories']} categor(y/ies)")
    return 0


def cmd_stats(args) -> int:
    from db.stats import stats

    print("\n".join(stats(open_store(args)).lines()))
    return 0


def cmd_ui(args) -> int:
    from annotator.ui import launch

    launch(open_store(args), host=args.host, port=args.port, auth=args.auth, share=args.share)
    return 0


COMMANDS = {
    None: cmd_ui,
    "ui": cmd_ui,
    "import-images": cmd_import_images,
    "import-coco": cmd_import_coco,
    "export-coco": cmd_export_coco,
    "stats": cmd_stats,
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
