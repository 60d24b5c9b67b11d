"""COCO import: validate every field first, then write everything in one transaction.

A malformed file is rejected whole with one message per problem, each naming the offending id and
field; nothing of it is written. Ids (images, annotations, categories) are kept as given.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError

from db import masks
from db.errors import UserError
from db.ids import advance_sequences, id_problem
from db.instances import Instances
from db.media import (BadImage, FileNames, PreparedImage, clash_text, file_name_problem, media_writer, prepare,
                      read_file, shape_problem, write_new_media)
from db.schema import MAX_ID, Annotation, Category, DatasetMeta, Image, text_problem, unicode_problem, utcnow
from db.store import Store

_IMAGE_FIELDS = {"id", "file_name", "width", "height"}
_CAT_FIELDS = {"id", "name", "supercategory", "keypoints", "skeleton"}
_MAX_SIDE = 1_000_000  # pixels; the store's pixel limit refuses far smaller images anyway


class CocoRejected(UserError):
    """The file was refused; ``problems`` lists every reason, each naming an id and a field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:50]
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"COCO file rejected ({len(problems)} problem(s)), nothing imported:\n  "
                         + "\n  ".join(shown) + more)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _nums(v: Any) -> bool:
    return isinstance(v, list) and all(_is_num(x) for x in v)


class _Checker:
    def __init__(self):
        self.problems: list[str] = []

    def bad(self, where: str, field: str, msg: str) -> None:
        self.problems.append(f"{where}: field '{field}': {msg}")


def _check_categories(raw: Any, ck: _Checker) -> dict[int, dict]:
    cats: dict[int, dict] = {}
    if not isinstance(raw, list):
        ck.bad("file", "categories", "must be a list")
        return cats
    names: dict[str, int] = {}
    for i, c in enumerate(raw):
        if not isinstance(c, dict):
            ck.bad(f"categories[{i}]", "-", "must be an object")
            continue
        cid = c.get("id")
        where = f"category id {cid!r}" if "id" in c else f"categories[{i}]"
        if id_problem(cid):
            ck.bad(where, "id", id_problem(cid))
            continue
        if not _check_finite(c, where, ck):
            continue
        if cid in cats:
            ck.bad(where, "id", "duplicate category id")
            continue
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            ck.bad(where, "name", "must be a non-empty string")
        elif text_problem(Category.name, name):
            ck.bad(where, "name", f"{name[:60]!r} {text_problem(Category.name, name)}")
        elif name in names:
            ck.bad(where, "name", f"'{name}' is also the name of category id {names[name]}")
        else:
            names[name] = cid
        if "supercategory" in c and not isinstance(c["supercategory"], str):
            ck.bad(where, "supercategory", "must be a string")
        elif text_problem(Category.supercategory, c.get("supercategory", "")):
            ck.bad(where, "supercategory", f"{c['supercategory'][:60]!r} "
                                           f"{text_problem(Category.supercategory, c['supercategory'])}")
        kps = c.get("keypoints")
        if kps is not None and not (isinstance(kps, list) and all(isinstance(k, str) for k in kps)):
            ck.bad(where, "keypoints", "must be a list of keypoint names")
            kps = None
        sk = c.get("skeleton")
        if sk is not None:
            n = len(kps or [])
            if not (isinstance(sk, list) and all(isinstance(p, list) and len(p) == 2 and all(_is_int(x) for x in p)
                                                 for p in sk)):
                ck.bad(where, "skeleton", "must be a list of [a, b] pairs of 1-based keypoint indices")
            elif any(not (1 <= x <= n) for p in sk for x in p):
                ck.bad(where, "skeleton", f"pair index out of range 1..{n} (skeleton pairs are 1-based)")
        cats[cid] = c
    return cats


def _check_images(raw: Any, ck: _Checker, limits) -> dict[int, dict]:
    """The file's images by id; each bad field named, and a size the store refuses (``limits``: its Settings,
    db.media.shape_problem) named before any file is read."""
    imgs: dict[int, dict] = {}
    if not isinstance(raw, list):
        ck.bad("file", "images", "must be a list")
        return imgs
    names = FileNames()
    for i, im in enumerate(raw):
        if not isinstance(im, dict):
            ck.bad(f"images[{i}]", "-", "must be an object")
            continue
        iid = im.get("id")
        where = f"image id {iid!r}" if "id" in im else f"images[{i}]"
        if id_problem(iid):
            ck.bad(where, "id", id_problem(iid))
            continue
        if not _check_finite(im, where, ck):
            continue
        if iid in imgs:
            ck.bad(where, "id", "duplicate image id")
            continue
        ok = True
        fn = im.get("file_name")
        if file_name_problem(fn):
            ck.bad(where, "file_name", f"{fn[:200]!r} {file_name_problem(fn)}" if isinstance(fn, str) else
                   "missing or not a string")
            ok = False
        elif names.clash(fn, iid):
            ck.bad(where, "file_name", f"'{fn}' {clash_text(fn, names.clash(fn, iid))}")
            ok = False
        else:
            names.add(fn, iid)
        for f in ("width", "height"):
            if not _is_int(im.get(f)) or not 0 < im[f] <= _MAX_SIDE:
                ck.bad(where, f, f"missing or not an integer in 1..{_MAX_SIDE}")
                ok = False
        if ok and shape_problem(im["width"], im["height"], limits):
            ck.bad(where, "width/height", shape_problem(im["width"], im["height"], limits))
            ok = False
        if ok:
            imgs[iid] = im
    return imgs


def _check_segmentation(seg: Any, where: str, im: dict, ck: _Checker) -> None:
    h, w = im["height"], im["width"]
    problem = masks.rle_problem(seg, h, w) if isinstance(seg, dict) else masks.polygon_problem(seg, h, w)
    if problem:
        ck.bad(where, "segmentation", problem)


_MAX_DEPTH = 32  # nesting of lists and objects inside one entity; COCO itself needs 3
_HUGE = 2 ** 1023  # an integer beyond this is no number any float reader can hold


def _unusable_number(value: Any, path: str = "", depth: int = 0) -> str | None:
    """Where the first unusable value inside ``value`` is, and why: NaN or infinity (Python's json reader
    accepts NaN, Infinity and 1e999), an integer too large for any float, a string (or key) with a lone
    surrogate (no UTF-8 file, so no export, could hold it), or nesting deeper than _MAX_DEPTH. None when
    there is none."""
    if depth > _MAX_DEPTH:
        return f"{path or 'value'} is nested deeper than {_MAX_DEPTH} levels"
    if isinstance(value, str):
        return f"{path or 'value'} {unicode_problem(value)}" if unicode_problem(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'value'} is NaN or infinite"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if -_HUGE < value < _HUGE else f"{path or 'value'} is an integer too large for any number type"
    if isinstance(value, list):
        if all((type(v) is int and -_HUGE < v < _HUGE) or (type(v) is float and math.isfinite(v)) for v in value):
            return None
        for k, v in enumerate(value):
            found = _unusable_number(v, f"{path}[{k}]", depth + 1)
            if found:
                return found
    elif isinstance(value, dict):
        for k, v in value.items():
            if unicode_problem(k):
                return f"{path or 'value'}: a key {unicode_problem(k)}"  # (the key itself cannot be shown)
            found = _unusable_number(v, f"{path}.{k}" if path else str(k), depth + 1)
            if found:
                return found
    return None


def _check_finite(entity: dict, where: str, ck: _Checker) -> bool:
    found = _unusable_number(entity)
    if found:
        rule = ("COCO JSON is UTF-8 text" if "surrogate" in found else
                "COCO JSON holds only finite numbers of ordinary size")
        ck.bad(where, found.split(".")[0].split("[")[0].split(" ")[0].rstrip(":"), f"{found}; {rule}")
    return found is None


def _check_annotations(raw: Any, imgs: dict, cats: dict, ck: _Checker) -> dict[int, dict]:
    anns: dict[int, dict] = {}
    if not isinstance(raw, list):
        ck.bad("file", "annotations", "must be a list")
        return anns
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            ck.bad(f"annotations[{i}]", "-", "must be an object")
            continue
        aid = a.get("id")
        where = f"annotation id {aid!r}" if "id" in a else f"annotations[{i}]"
        if id_problem(aid):
            ck.bad(where, "id", id_problem(aid))
            continue
        if aid in anns:
            ck.bad(where, "id", "duplicate annotation id")
            continue
        anns[aid] = a
        if not _check_finite(a, where, ck):
            continue
        im = imgs.get(a["image_id"]) if _is_int(a.get("image_id")) else None  # (a list is no dict key)
        if not _is_int(a.get("image_id")):
            ck.bad(where, "image_id", "missing or not an integer")
        elif im is None:
            ck.bad(where, "image_id", f"image id {a['image_id']} is not in the file's images")
        cat = cats.get(a["category_id"]) if _is_int(a.get("category_id")) else None
        if not _is_int(a.get("category_id")):
            ck.bad(where, "category_id", "missing or not an integer")
        elif cat is None:
            ck.bad(where, "category_id", f"category id {a['category_id']} is not in the file's categories")
        bbox = a.get("bbox")
        if not (_nums(bbox) and len(bbox) == 4):
            ck.bad(where, "bbox", "must be [x, y, width, height] (4 numbers)")
        elif bbox[2] < 0 or bbox[3] < 0:
            ck.bad(where, "bbox", "width and height must not be negative")
        elif im is not None:
            far = masks.coordinate_problem([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]],
                                           im["height"], im["width"])
            if far:
                ck.bad(where, "bbox", far)
        if "area" in a and (not _is_num(a["area"]) or not 0 <= a["area"] <= MAX_ID):
            ck.bad(where, "area", f"must be a number in 0..{MAX_ID}")
        if "iscrowd" in a and a["iscrowd"] not in (0, 1) or isinstance(a.get("iscrowd"), bool):
            ck.bad(where, "iscrowd", "must be 0 or 1")
        if "score" in a and not _is_num(a["score"]):
            ck.bad(where, "score", "must be a number")
        if "segmentation" in a and im is not None:
            _check_segmentation(a["segmentation"], where, im, ck)
        elif "segmentation" not in a and "area" not in a:
            ck.bad(where, "area", "missing, and there is no segmentation to compute it from")
        kps = a.get("keypoints")
        if kps is not None:
            names = (cat or {}).get("keypoints") or []
            if not _nums(kps) or len(kps) % 3:
                ck.bad(where, "keypoints", "must be a flat list [x, y, v] * K of numbers")
            elif cat is not None and len(kps) != 3 * len(names):
                ck.bad(where, "keypoints", f"has {len(kps) // 3} keypoints; category {cat['id']} "
                                           f"('{cat.get('name')}') lists {len(names)}")
            elif any(v not in (0, 1, 2) for v in kps[2::3]):
                ck.bad(where, "keypoints", "visibility flags must be 0, 1 or 2")
            elif im is not None and masks.coordinate_problem(kps, im["height"], im["width"], step=3):
                ck.bad(where, "keypoints", masks.coordinate_problem(kps, im["height"], im["width"], step=3))
        if "num_keypoints" in a:
            k = len((cat or {}).get("keypoints") or [])
            if not _is_int(a["num_keypoints"]) or not 0 <= a["num_keypoints"] <= k:
                ck.bad(where, "num_keypoints", f"must be an integer in 0..{k} (the category's keypoint count)")
    return anns


class _SharedFloats(dict):
    """``parse_float`` for json: each distinct number text becomes one float object, shared wherever it
    occurs. A COCO file repeats its coordinates (a 60 MB polygon file holds 6.7 million floats but few
    distinct values), so this holds it in a third of the memory, and parses it faster; at most LIMIT texts
    are remembered, so a file of all-different numbers costs at most that much more."""

    LIMIT = 1 << 18

    def __missing__(self, text: str) -> float:
        value = float(text)
        if len(self) < self.LIMIT:
            self[text] = value
        return value


def load_json(path: str | Path) -> Any:
    """The parsed file, or CocoRejected naming why it cannot be read. Memory (measured by ``bench/store.py
    --coco-mb``): the file's text while parsing (read as text once, not as bytes and then text) and the
    parsed values, floats shared (``_SharedFloats``); nothing else holds a copy of the file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
        return json.loads(text, parse_float=_SharedFloats().__getitem__)
    except FileNotFoundError:
        raise CocoRejected([f"file: {path}: no such file"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoRejected([f"file: {path}: not valid JSON: {e}"]) from None
    except (ValueError, RecursionError) as e:  # integers of thousands of digits, nesting too deep to read
        raise CocoRejected([f"file: {path}: cannot be read as COCO JSON: {str(e)[:200] or type(e).__name__}"]) from None


def import_coco(
    store: Store,
    source: str | Path | dict,
    images_dir: str | Path,
    *,
    as_proposals: bool = False,
    needs_review: bool = False,
    user: str = "import",
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, int]:
    """Import a COCO instances or person_keypoints file. Raises CocoRejected, writing nothing. Labels imported
    as labels (not ``as_proposals``) wait for no reviewer unless ``needs_review``: then their images join the
    review queue (db.annotations.awaiting_review) as saved by ``user``.

    A category already in the store (same id and name) keeps the store's keypoint list and skeleton: the
    file's annotations are checked against it, and a file category naming other keypoints is refused.

    The merge rule for an image already in the store (same id, same bytes): its labels and proposals stay
    and the file's annotations are added (the image's row version moves on, so an open page's save is
    refused and kept for review). Imported as labels, it is done afterwards unless it still holds proposals
    nobody reviewed: then it keeps its status (proposed, in review), so no unreviewed proposal is ever
    exported under a done image as if it were background; a save waiting for a reviewer keeps waiting.
    Imported as proposals (``as_proposals``), an image already done takes none of them (its labels are
    finished: they are left out and counted in ``proposals_left_out``) and stays done; any other image
    keeps its status (``new`` becomes ``proposed``)."""
    data = load_json(source) if not isinstance(source, dict) else source
    ck = _Checker()
    if not isinstance(data, dict):
        raise CocoRejected(["file: top level must be a JSON object with images, annotations, categories"])
    for key in ("images", "annotations", "categories"):
        if key not in data:
            ck.bad("file", key, "missing")
    if ck.problems:
        raise CocoRejected(ck.problems)
    for key in ("info", "licenses"):
        if key in data:
            _check_finite({key: data[key]}, "file", ck)
    cats = _check_categories(data["categories"], ck)
    cats = _as_after_import(store, cats, ck)
    imgs = _check_images(data["images"], ck, store.settings)
    anns = _check_annotations(data["annotations"], imgs, cats, ck)
    if ck.problems:
        raise CocoRejected(ck.problems)

    prepared = _read_images(store, imgs, Path(images_dir), ck, progress)
    existing = _check_against_store(store, cats, imgs, anns, prepared, ck)
    if ck.problems:
        raise CocoRejected(ck.problems)

    with store.session() as s:
        info_kept = "info" in data and s.get(DatasetMeta, "info") is not None
    with media_writer(store.settings) as journal:
        wrote = _write_all(store, data, cats, imgs, anns, prepared, existing, as_proposals, needs_review, user,
                           journal)
    merged = sum(1 for c in cats.values() if c.get("_in_store"))
    return {"images": len(imgs), "annotations": wrote["annotations"], "categories": len(cats),
            "categories_new": len(cats) - merged, "categories_merged": merged, "info_kept": info_kept,
            "images_already_in_store": len(existing), "proposals_left_out": wrote["left_out"],
            "done_images_left_as_they_were": wrote["done_kept"],
            "images_waiting_for_proposals_to_be_reviewed": wrote["not_done"]}


def _as_after_import(store: Store, cats: dict[int, dict], ck: _Checker) -> dict[int, dict]:
    """The file's categories as the store will hold them after the import: one already in the store (same
    id) keeps the store's keypoint list and skeleton (marked ``_in_store``), so the annotations are checked
    against what they will belong to. A file category whose keypoint list is not the store's is refused by
    id, naming both lists' counts (the file's annotations would not fit the store's list)."""
    with store.session() as s:
        have = {c.id: c for c in s.scalars(select(Category))}
    out: dict[int, dict] = {}
    for cid, c in cats.items():
        row = have.get(cid)
        if row is None:
            out[cid] = c
            continue
        theirs, mine = list(row.keypoints or []), c.get("keypoints") or []
        if mine and mine != theirs:
            ck.bad(f"category id {cid}", "keypoints",
                   f"lists {len(mine)} keypoint(s) ({_names(mine)}); the store's '{row.name}' lists {len(theirs)}"
                   + (f" ({_names(theirs)})" if theirs else "") + ": the store's list is kept, so write the file's "
                   "keypoints in the store's order (or change the category in the Dataset tab first)")
        out[cid] = {**c, "keypoints": theirs or None, "skeleton": row.skeleton, "_in_store": True}
    return out


def _names(keypoints: list) -> str:
    shown = ", ".join(str(k) for k in keypoints[:5])
    return shown + (f", ... {len(keypoints) - 5} more" if len(keypoints) > 5 else "")


def summary(result: dict) -> str:
    """One line for people: what an import added, categories new and merged into existing ones apart."""
    cats = f"{result['categories_new']} new categor{'y' if result['categories_new'] == 1 else 'ies'}"
    if result["categories_merged"]:
        cats += f", {result['categories_merged']} merged into existing ones (same id)"
    line = f"imported {result['images']} image(s), {result['annotations']} annotation(s), {cats}"
    if result.get("info_kept"):  # one dataset, one COCO info: the first file's
        line += "; the store keeps the COCO info of the first file imported (this file's info was not stored)"
    if result.get("proposals_left_out"):
        line += (f"; {result['proposals_left_out']} proposal(s) on {result['done_images_left_as_they_were']} "
                 "image(s) already done were left out (finished labels take no proposals)")
    if result.get("images_waiting_for_proposals_to_be_reviewed"):
        line += (f"; {result['images_waiting_for_proposals_to_be_reviewed']} image(s) already in the store still "
                 "hold proposals nobody reviewed, so they are not done yet")
    return line


def _write_all(store, data, cats, imgs, anns, prepared, existing, as_proposals, needs_review, user,
               journal) -> dict[str, int]:
    """Media files first (journaled), then every row in one transaction; a failure removes the media it
    wrote, and a kill leaves them to the next start's clean-up. Returns what ``_write`` wrote."""
    written: list[Path] = []
    try:
        for p in prepared.values():
            if write_new_media(store.settings.media_dir, p, journal):
                written.append(store.settings.media_dir / p.media_path)
        with store.transaction() as s:
            wrote = _write(s, data, cats, imgs, anns, prepared, existing, as_proposals, needs_review, user)
        journal.committed()
        return wrote
    except IntegrityError as e:  # another import took an id or file name after the checks above
        for path in written:
            path.unlink(missing_ok=True)
        raise CocoRejected([f"file: an id or file name was taken by a concurrent import ({e.orig}); "
                            "run the import again"]) from None
    except BaseException:
        for path in written:  # nothing of a refused import stays behind
            path.unlink(missing_ok=True)
        raise


def _read_images(store: Store, imgs: dict, images_dir: Path, ck: _Checker,
                 progress: Callable[[int, str], None] | None) -> dict[int, PreparedImage]:
    out: dict[int, PreparedImage] = {}
    root = images_dir.resolve()
    for n, (iid, im) in enumerate(sorted(imgs.items()), start=1):
        if progress:
            progress(n, im["file_name"])
        where = f"image id {iid}"
        path = (root / im["file_name"]).resolve()
        if not path.is_relative_to(root):
            ck.bad(where, "file_name", f"'{im['file_name']}' points outside the images folder")
            continue
        try:
            p = prepare(read_file(path, store.settings.max_image_bytes), store.settings.max_pixels, store.settings)
        except FileNotFoundError:
            ck.bad(where, "file_name", f"'{im['file_name']}' not found in {images_dir}")
            continue
        except (BadImage, OSError) as e:
            ck.bad(where, "file_name", f"'{im['file_name']}': {e}")
            continue
        if (p.width, p.height) != (im["width"], im["height"]):
            ck.bad(where, "width/height", f"{im['width']}x{im['height']} disagree with the file "
                                          f"({p.width}x{p.height} after EXIF orientation)")
            continue
        out[iid] = p
    return out


def _check_against_store(store: Store, cats: dict, imgs: dict, anns: dict,
                         prepared: dict[int, PreparedImage], ck: _Checker) -> set[int]:
    """Ids already in the store must be the same things; returns image ids to reuse."""
    reuse: set[int] = set()
    with store.session() as s:
        for c in s.scalars(select(Category)):
            given = cats.get(c.id)
            if given is not None and given["name"] != c.name:
                ck.bad(f"category id {c.id}", "name", f"'{given['name']}' disagrees with the store's '{c.name}'")
            for cid, g in cats.items():
                if g["name"] == c.name and cid != c.id:
                    ck.bad(f"category id {cid}", "id", f"name '{c.name}' is category id {c.id} in the store")
        by_hash = {p.content_hash: iid for iid, p in prepared.items()}
        for row in s.execute(select(Image.id, Image.content_hash, Image.file_name)):
            p = prepared.get(row.id)
            if p is not None:
                if p.content_hash == row.content_hash:
                    reuse.add(row.id)
                else:
                    ck.bad(f"image id {row.id}", "id", f"already in the store as a different image "
                                                       f"('{row.file_name}')")
            elif row.content_hash in by_hash:
                ck.bad(f"image id {by_hash[row.content_hash]}", "file_name",
                       f"the same file is already in the store as image id {row.id}")
        in_store = FileNames(s.execute(select(Image.file_name, Image.id)))
        for iid, im in imgs.items():
            got = in_store.clash(im["file_name"], iid)
            if got is not None:
                ck.bad(f"image id {iid}", "file_name", f"'{im['file_name']}' {clash_text(im['file_name'], got)} "
                                                       "in the store")
        ids = list(anns)
        for k in range(0, len(ids), 900):
            for aid in s.scalars(select(Annotation.id).where(Annotation.id.in_(ids[k:k + 900]))):
                ck.bad(f"annotation id {aid}", "id", "already in the store")
    return reuse


def _write(s, data, cats, imgs, anns, prepared, reuse, as_proposals, needs_review, user) -> dict[str, int]:
    """Every row of the import, in the transaction ``s``; the images already in the store (``reuse``) follow
    the merge rule of ``import_coco``. Returns {"annotations": written, "left_out": proposals left out on done
    images, "done_kept": those images, "not_done": images already in the store that stay not done}."""
    now = utcnow()
    # labels imported as labels wait for a reviewer only when asked; proposals wait for a labeler first
    review = dict(saved_by=user, saved_at=now) if needs_review and not as_proposals else {}
    # the images first, then the categories (the order of db.annotations.save_review: no two writers wait
    # for each other in a circle)
    skip, not_done = _merge_into_existing(s, sorted(reuse), as_proposals, review, now)
    _check_categories_unchanged(s, cats)
    have = set(s.scalars(select(Category.id)))
    new_cats = [dict(id=cid, name=c["name"], supercategory=c.get("supercategory", ""),
                     keypoints=c.get("keypoints"), skeleton=c.get("skeleton"))
                for cid, c in sorted(cats.items()) if cid not in have]
    if new_cats:
        s.execute(insert(Category), new_cats)
    for key in ("info", "licenses"):
        if key in data and s.get(DatasetMeta, key) is None:
            s.add(DatasetMeta(key=key, value=data[key]))
    rows = []
    for iid, im in sorted(imgs.items()):
        if iid in reuse:
            continue
        p = prepared[iid]
        extra = {k: v for k, v in im.items() if k not in _IMAGE_FIELDS} or None
        rows.append(dict(id=iid, file_name=im["file_name"], content_hash=p.content_hash, media_path=p.media_path,
                         width=p.width, height=p.height, status="proposed" if as_proposals else "done",
                         row_version=1, extra=extra, created_at=now, updated_at=now,
                         **(review or dict(saved_by=None, saved_at=None))))
    if rows:
        s.execute(insert(Image), rows)
    s.flush()
    source, state = ("model", "proposed") if as_proposals else ("human", "accepted")
    written = left_out = 0
    batch: list[dict] = []
    for image_id, group in _by_image(anns):
        if image_id in skip:
            left_out += len(group)
            continue
        im = imgs[image_id]
        inst = Instances.from_coco(group, im["height"], im["width"], source=source, state=state)
        for i in range(len(inst)):
            batch.append(dict(
                id=inst.ann_ids[i], image_id=image_id, **inst.row_values(i), source=source, score=inst.scores[i],
                review_state=state, extra=inst.extras[i], created_by=user, reviewed_by="" if as_proposals else user,
                created_at=now, reviewed_at=None if as_proposals else now))
        if len(batch) >= 5000:  # rows go in as they are made: the file's annotations are not held twice
            s.execute(insert(Annotation), batch)
            written, batch = written + len(batch), []
    if batch:
        s.execute(insert(Annotation), batch)
        written += len(batch)
    advance_sequences(s, "categories", "images", "annotations")
    return {"annotations": written, "left_out": left_out, "done_kept": len(skip), "not_done": not_done}


def _by_image(anns: dict[int, dict]):
    """(image id, its annotations by id) in image id order, an uncompressed RLE made compressed (stored and
    exported so)."""
    by_image: dict[int, list[dict]] = {}
    for aid in sorted(anns):
        a = anns[aid]
        by_image.setdefault(a["image_id"], []).append(a)
    for image_id in sorted(by_image):
        group = by_image.pop(image_id)
        for k, a in enumerate(group):
            seg = a.get("segmentation")
            if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                group[k] = {**a, "segmentation": masks.to_compressed(seg)}
        yield image_id, group


def _merge_into_existing(s, reuse: list[int], as_proposals: bool, review: dict, now) -> tuple[set[int], int]:
    """The merge rule of ``import_coco`` for the images already in the store (locked in id order, as every
    multi-image writer does). Returns the done images that take no proposals, and how many of the others
    stay not done (labels imported onto an image holding unreviewed proposals)."""
    if not reuse:
        return set(), 0
    status: dict[int, str] = {}
    for k in range(0, len(reuse), 900):
        status.update(s.execute(select(Image.id, Image.status).where(Image.id.in_(reuse[k:k + 900]))
                                .order_by(Image.id).with_for_update()).all())
    if as_proposals:
        skip = {i for i in reuse if status.get(i) == "done"}
        take = [i for i in reuse if i not in skip]
        for k in range(0, len(take), 900):
            s.execute(update(Image).where(Image.id.in_(take[k:k + 900]))
                      .values(status=case((Image.status == "new", "proposed"), else_=Image.status),
                              row_version=Image.row_version + 1, updated_at=now))
        return skip, 0
    pending: set[int] = set()
    for k in range(0, len(reuse), 900):
        pending.update(s.scalars(select(Annotation.image_id).where(Annotation.image_id.in_(reuse[k:k + 900]),
                                                                   Annotation.review_state == "proposed")))
    done = [i for i in reuse if i not in pending]
    for ids, values in ((done, dict(status="done", **review)), (sorted(pending), {})):
        for k in range(0, len(ids), 900):
            s.execute(update(Image).where(Image.id.in_(ids[k:k + 900]))
                      .values(row_version=Image.row_version + 1, updated_at=now, **values))
    return set(), sum(1 for i in pending if status.get(i) != "done")


def _check_categories_unchanged(s, cats: dict[int, dict]) -> None:
    """The store's categories the file merges into still list the keypoints its annotations were checked
    against (an admin may have changed one since): read under a lock that holds until the import commits
    (FOR SHARE on PostgreSQL; SQLite's writing transaction holds its lock from its start)."""
    merged = sorted(cid for cid, c in cats.items() if c.get("_in_store"))
    for k in range(0, len(merged), 900):
        for cid, name, kps in s.execute(select(Category.id, Category.name, Category.keypoints)
                                        .where(Category.id.in_(merged[k:k + 900])).with_for_update(read=True)):
            if list(kps or []) != list(cats[cid].get("keypoints") or []):
                raise CocoRejected([f"category id {cid}: field 'keypoints': '{name}' was changed in the store "
                                    f"during the import (it lists {len(kps or [])} keypoint(s) now); nothing was "
                                    "imported: run the import again"])
