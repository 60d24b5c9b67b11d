"""Property-based fuzzing (hypothesis) of what comes in from outside: COCO files, image files, segmentations.
Any input either goes in whole or is refused with a message naming where the problem is; a refusal writes
nothing (no row, no media file); no other exception escapes; memory stays bounded. The classes of input
generated are listed in docs/reliability.md."""

from __future__ import annotations

import copy
import io
import math
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools.coco import COCO

from db import coco_export, masks
from db.coco_import import CocoRejected, import_coco
from db.ingest import ingest
from db.media import shape_problem
from db.stats import stats
from db.store import Store
from tests.db.test_coco import _handmade

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
MEMORY_LIMIT = 200 * 2 ** 20  # bytes Python may allocate for one small input (traced peak)

# Any JSON value, the awkward ones often: NaN and infinities, huge and negative integers, empty and odd strings,
# nesting.
SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
           | st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 53, 2 ** 53 + 1, 2 ** 63, 10 ** 400])
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["", "..", "/etc/passwd", "a\x00b", "é", "oops", "1e999"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=4), max_leaves=12)


def _paths(value, prefix=()):
    """Every place in a JSON value: (path, value) for the value itself and everything inside it."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _mutate(coco: dict, data) -> dict:
    """The COCO dict with one to three places replaced by any JSON value, deleted, or duplicated."""
    out = copy.deepcopy(coco)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        places = [p for p, _ in _paths(out) if p]
        path = data.draw(st.sampled_from(places), label="where")
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        how = data.draw(st.sampled_from(["replace", "replace", "delete", "duplicate"]), label="how")
        key = path[-1]
        if how == "replace":
            parent[key] = data.draw(JSON, label="value")
        elif how == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return out


def _nothing_written(store: Store) -> None:
    st_ = stats(store)
    assert st_.images == 0 and not st_.annotations_by_category, "a refused import wrote rows"
    assert not [p for p in store.settings.media_dir.rglob("*") if p.is_file()], "a refused import left media"


def _bounded(fn):
    tracemalloc.start()
    try:
        return fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"{peak / 2 ** 20:.0f} MB allocated for a small input"


@FUZZ
@given(data=st.data())
def test_any_mutated_coco_file_imports_whole_or_is_refused_by_name(store_factory, data):
    with tempfile.TemporaryDirectory() as tmp:
        coco, images_dir = _handmade(Path(tmp))
        mutated = _mutate(coco, data)
        with store_factory.scratch(Path(tmp) / "store") as store:
            try:
                _bounded(lambda: import_coco(store, mutated, images_dir))
            except CocoRejected as e:
                problems = e.args[0] if e.args and isinstance(e.args[0], list) else [str(e)]
                assert problems and all(isinstance(p, str) and p.strip() for p in problems)
                named = ("image", "annotation", "categor", "file", "info", "licenses")
                assert all(any(w in p for w in named) for p in problems), problems  # each says where
                _nothing_written(store)
                return
            # accepted: the store is consistent, and its export is a COCO file pycocotools reads
            text = coco_export.dumps(coco_export.build(store))
            exported = Path(tmp) / "export.json"
            exported.write_bytes(text if isinstance(text, bytes) else text.encode())
            COCO(str(exported))


@FUZZ
@given(data=st.data())
def test_any_json_value_in_place_of_a_whole_section_is_refused_by_name(store_factory, data):
    with tempfile.TemporaryDirectory() as tmp:
        coco, images_dir = _handmade(Path(tmp))
        section = data.draw(st.sampled_from(["images", "annotations", "categories", "info", "licenses"]))
        coco[section] = data.draw(JSON, label="value")
        with store_factory.scratch(Path(tmp) / "store") as store:
            try:
                import_coco(store, coco, images_dir)
            except CocoRejected as e:
                assert str(e).strip()
                _nothing_written(store)


def _png_bytes(w: int = 12, h: int = 9) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 40)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "JPEG")
    return buf.getvalue()


@st.composite
def image_files(draw) -> bytes:
    """Image files broken in every way a disk, a download or an attacker breaks them."""
    base = draw(st.sampled_from([_png_bytes(), _jpeg_bytes(), b"GIF89a", b"\x89PNG\r\n\x1a\n", b""]))
    how = draw(st.sampled_from(["keep", "truncate", "flip", "garbage", "huge_png", "odd_shape"]))
    if how == "odd_shape":  # a valid image of a shape the model or the canvas cannot take (or just can)
        return _png_bytes(*draw(odd_shapes()))
    if how == "truncate" and base:
        return base[:draw(st.integers(0, len(base) - 1))]
    if how == "flip" and base:
        b = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
        return bytes(b)
    if how == "garbage":
        return base + draw(st.binary(max_size=200))
    if how == "huge_png":  # a valid PNG header declaring 100000 x 100000 pixels
        import struct
        import zlib
        ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
        chunk = b"IHDR" + ihdr
        return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
                + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF))
    return base


@st.composite
def odd_shapes(draw) -> tuple[int, int]:
    """(width, height): 1 x N, N x 1, thin strips around the 20:1 limit, small squares around the 8 px one."""
    short = draw(st.sampled_from([1, 2, 3, 7, 8, 9, 12]))
    long = draw(st.sampled_from([1, 8, 100, 5000]) | st.integers(short, 25 * short + 3))
    return draw(st.sampled_from([(short, long), (long, short)]))


@FUZZ
@given(files=st.lists(image_files(), min_size=1, max_size=4))
def test_any_image_file_is_imported_or_skipped_with_a_reason(store_factory, files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        for k, b in enumerate(files):
            (src / f"f{k}.png").write_bytes(b)
        with store_factory.scratch(root / "store") as store:
            report = _bounded(lambda: ingest(store, [src]))
            named = {n for _, n in report.added} | {n for n, _ in report.duplicates} | {n for n, _ in report.skipped}
            assert len(named) >= 1 and all(r.strip() for _, r in report.skipped)
            assert len(report.added) + len(report.duplicates) + len(report.skipped) == len(files)
            assert stats(store).images == len(report.added)
            from db.media import load_rgb
            from db import annotations

            for image_id, _ in report.added:  # every image that went in can be opened, and has a usable shape
                im = annotations.images(store, [image_id])[image_id]
                pix = np.asarray(load_rgb(store.media_file(im.media_path)))
                assert pix.shape == (im.height, im.width, 3)
                assert shape_problem(im.width, im.height, store.settings) is None


@settings(FUZZ, max_examples=30)
@given(size=odd_shapes())
def test_any_image_shape_is_imported_or_refused_by_name_alike_as_a_file_and_in_a_coco_file(store_factory, size):
    w, h = size
    usable = 8 <= min(w, h) and max(w, h) <= 20 * min(w, h)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "odd.png").write_bytes(_png_bytes(w, h))
        with store_factory.scratch(root / "files") as store:
            report = ingest(store, [root / "odd.png"])
            assert bool(report.added) == usable, report.lines()
            if not usable:
                assert report.skipped[0][1].startswith(f"{w}x{h}: ")
        coco = {"images": [{"id": 5, "file_name": "odd.png", "width": w, "height": h}], "annotations": [],
                "categories": [{"id": 1, "name": "thing"}]}
        with store_factory.scratch(root / "coco") as store:
            try:
                import_coco(store, coco, root)
                assert usable and stats(store).images == 1
            except CocoRejected as e:
                assert not usable and f"image id 5: field 'width/height': {w}x{h}: " in str(e)
                _nothing_written(store)


SEGMENTATIONS = (
    st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2 ** 64, 2 ** 64),
                                 st.none(), st.text(max_size=3)), max_size=12), max_size=4)
    | st.fixed_dictionaries({"size": st.lists(st.integers(-3, 40) | st.none(), max_size=3),
                             "counts": st.text(max_size=30) | st.lists(st.integers(-5, 2 ** 40), max_size=12)
                             | st.binary(max_size=20)})
    | JSON
)


@settings(max_examples=300, deadline=None)
@given(seg=SEGMENTATIONS, h=st.integers(1, 40), w=st.integers(1, 40))
def test_any_segmentation_decodes_to_the_image_size_or_is_refused(seg, h, w):
    try:
        masks.check(seg, h, w)
    except masks.MaskError as e:
        assert str(e).strip()
        with pytest.raises(masks.MaskError):
            masks.decode(seg, h, w)
        return
    m = masks.decode(seg, h, w)
    assert m.shape == (h, w) and m.dtype == bool
    assert math.isfinite(masks.area(seg, h, w))
