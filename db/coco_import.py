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

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from db import masks
from db.errors import UserError
from db.ids import advance_sequences, id_problem
from db.instances import Instances
from db.media import (BadImage, PreparedImage, file_name_problem, media_writer, prepare, read_file,
                      shape_problem, write_new_media)
from db.schema import MAX_ID, Annotation, Category, DatasetMeta, Image, utcnow
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
        elif name in names:
            ck.bad(where, "name", f"'{name}' is also the name of category id {names[name]}")
        else:
            names[name] = cid
        if "supercategory" in c and not isinstance(c["supercategory"], str):
            ck.bad(where, "supercategory", "must be a string")
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
    names: dict[str, int] = {}
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
            ck.bad(where, "file_name", f"{fn!r} {file_name_problem(fn)}" if isinstance(fn, str) else
                   "missing or not a string")
            ok = False
        elif fn in names:
            ck.bad(where, "file_name", f"'{fn}' is also the file of image id {names[fn]}")
            ok = False
        else:
            names[fn] = iid
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
    accepts NaN, Infinity and 1e999), an integer too large for any float, or nesting deeper than
    _MAX_DEPTH. None when there is none."""
    if depth > _MAX_DEPTH:
        return f"{path or 'value'} is nested deeper than {_MAX_DEPTH} levels"
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
            found = _unusable_number(v, f"{path}.{k}" if path else str(k), depth + 1)
            if found:
                return found
    return None


def _check_finite(entity: dict, where: str, ck: _Checker) -> bool:
    found = _unusable_number(entity)
    if found:
        ck.bad(where, found.split(".")[0].split("[")[0].split(" ")[0], f"{found}; COCO JSON holds only "
                                                                        "finite numbers of ordinary size")
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


def load_json(path: str | Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
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
    review queue (db.annotations.awaiting_review) as saved by ``user``."""
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
    imgs = _check_images(data["images"], ck, store.settings)
    anns = _check_annotations(data["annotations"], imgs, cats, ck)
    if ck.problems:
        raise CocoRejected(ck.problems)

    prepared = _read_images(store, imgs, Path(images_dir), ck, progress)
    existing = _check_against_store(store, cats, imgs, anns, prepared, ck)
    if ck.problems:
        raise CocoRejected(ck.problems)

    with store.session() as s:
        had = set(s.scalars(select(Category.id).where(Category.id.in_(list(cats)))))
        info_kept = "info" in data and s.get(DatasetMeta, "info") is not None
    with media_writer(store.settings) as journal:
        _write_all(store, data, cats, imgs, anns, prepared, existing, as_proposals, needs_review, user, journal)
    return {"images": len(imgs), "annotations": len(anns), "categories": len(cats),
            "categories_new": len(cats) - len(had), "categories_merged": len(had), "info_kept": info_kept,
            "images_already_in_store": len(existing)}


def summary(result: dict) -> str:
    """One line for people: what an import added, categories new and merged into existing ones apart."""
    cats = f"{result['categories_new']} new categor{'y' if result['categories_new'] == 1 else 'ies'}"
    if result["categories_merged"]:
        cats += f", {result['categories_merged']} merged into existing ones (same id)"
    line = f"imported {result['images']} image(s), {result['annotations']} annotation(s), {cats}"
    if result.get("info_kept"):  # one dataset, one COCO info: the first file's
        line += "; the store keeps the COCO info of the first file imported (this file's info was not stored)"
    return line


def _write_all(store, data, cats, imgs, anns, prepared, existing, as_proposals, needs_review, user, journal) -> None:
    """Media files first (journaled), then every row in one transaction; a failure removes the media it
    wrote, and a kill leaves them to the next start's clean-up."""
    written: list[Path] = []
    try:
        for p in prepared.values():
            if write_new_media(store.settings.media_dir, p, journal):
                written.append(store.settings.media_dir / p.media_path)
        with store.transaction() as s:
            _write(s, data, cats, imgs, anns, prepared, existing, as_proposals, needs_review, user)
        journal.committed()
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
        names_in_store = dict(s.execute(select(Image.file_name, Image.id)).all())
        for iid, im in imgs.items():
            other = names_in_store.get(im["file_name"])
            if other is not None and other != iid:
                ck.bad(f"image id {iid}", "file_name", f"'{im['file_name']}' is image id {other} in the store")
        ids = list(anns)
        for k in range(0, len(ids), 900):
            for aid in s.scalars(select(Annotation.id).where(Annotation.id.in_(ids[k:k + 900]))):
                ck.bad(f"annotation id {aid}", "id", "already in the store")
    return reuse


def _write(s, data, cats, imgs, anns, prepared, reuse, as_proposals, needs_review, user) -> None:
    now = utcnow()
    have = set(s.scalars(select(Category.id)))
    new_cats = [dict(id=cid, name=c["name"], supercategory=c.get("supercategory", ""),
                     keypoints=c.get("keypoints"), skeleton=c.get("skeleton"))
                for cid, c in sorted(cats.items()) if cid not in have]
    if new_cats:
        s.execute(insert(Category), new_cats)
    for key in ("info", "licenses"):
        if key in data and s.get(DatasetMeta, key) is None:
            s.add(DatasetMeta(key=key, value=data[key]))
    status = "proposed" if as_proposals else "done"
    # labels imported as labels wait for a reviewer only when asked; proposals wait for a labeler first
    saved = dict(saved_by=user, saved_at=now) if needs_review and not as_proposals else dict(saved_by=None,
                                                                                              saved_at=None)
    rows = []
    for iid, im in sorted(imgs.items()):
        if iid in reuse:
            continue
        p = prepared[iid]
        extra = {k: v for k, v in im.items() if k not in _IMAGE_FIELDS} or None
        rows.append(dict(id=iid, file_name=im["file_name"], content_hash=p.content_hash, media_path=p.media_path,
                         width=p.width, height=p.height, status=status, row_version=1, extra=extra,
                         created_at=now, updated_at=now, **saved))
    if rows:
        s.execute(insert(Image), rows)
    if reuse:
        s.execute(update(Image).where(Image.id.in_(sorted(reuse))).values(status=status, updated_at=now,
                                                                         row_version=Image.row_version + 1, **saved))
    s.flush()
    arows = []
    by_image: dict[int, list[dict]] = {}
    for aid, a in sorted(anns.items()):
        seg = a.get("segmentation")
        if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            a = {**a, "segmentation": masks.to_compressed(seg)}  # stored (and exported) compressed
        by_image.setdefault(a["image_id"], []).append(a)
    source, state = ("model", "proposed") if as_proposals else ("human", "accepted")
    for image_id, group in by_image.items():
        im = imgs[image_id]
        inst = Instances.from_coco(group, im["height"], im["width"], source=source, state=state)
        for i in range(len(inst)):
            arows.append(dict(
                id=inst.ann_ids[i], image_id=image_id, **inst.row_values(i), source=source, score=inst.scores[i],
                review_state=state, extra=inst.extras[i], created_by=user, reviewed_by="" if as_proposals else user,
                created_at=now, reviewed_at=None if as_proposals else now))
    arows.sort(key=lambda r: r["id"])
    for k in range(0, len(arows), 5000):
        s.execute(insert(Annotation), arows[k:k + 5000])
    advance_sequences(s, "categories", "images", "annotations")
