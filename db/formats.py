"""The export formats, one line each: what ``app.py export --format`` and the Export tab offer. A format is a
module that turns each image's ``Instances`` into its own files through ``db.export``'s rule (which images and
annotations) and writer (atomic files, zip or folder, name checks): ``db/coco_export.py`` and
``db/yolo_export.py`` are the examples. Adding one: its module with ``export(store, out, *,
include_proposals, all_images, **its options) -> dict`` (the counts, and ``notes``: lines for the summary),
and its line in ``FORMATS``; the Export tab then offers it (with the common options only). Options of its own
on the command line: their flags in app.py's ``export`` parser and its entries in ``cmd_export``'s ``given``
(refused with another format) and ``options`` (its keyword arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from db import coco_export, yolo_export
from db.errors import UserError


@dataclass(frozen=True)
class Format:
    name: str  # as typed after --format
    label: str  # the Export tab's choice
    export: Callable[..., dict[str, Any]]
    download: Callable[[bool], str]  # the file the Export tab prepares (with the images or not)
    summary: Callable[[dict[str, Any]], str]  # the counts an export returned, in words


FORMATS = {f.name: f for f in (
    Format("coco", "COCO", coco_export.export,
           lambda with_images: "coco_dataset.zip" if with_images else "coco_annotations.json",
           lambda r: f"{r['images']} image(s), {r['annotations']} annotation(s), {r['categories']} categor(y/ies)"),
    Format("yolo", "YOLO (Ultralytics: a zip with images/, labels/, data.yaml)", yolo_export.export,
           lambda with_images: "yolo_dataset.zip",  # (its labels name image files: always with them)
           lambda r: f"YOLO {r['task']}, {r['images']} image(s), {r['objects']} object(s), {r['classes']} class(es)"),
)}


def named(name: Any) -> Format:
    if not isinstance(name, str) or name not in FORMATS:
        raise UserError(f"export format {str(name)[:40]!r}: one of {', '.join(FORMATS)}")
    return FORMATS[name]
