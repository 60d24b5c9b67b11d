"""The Dataset tab's gallery: drawn lazily (not on page load), one page of images at a time, and a row that
cannot be drawn is named in its image's caption instead of taking the page down."""

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import event, select, update

from annotator import render, store_view
from db.coco_import import import_coco
from db.schema import Annotation, Image
from model.synthetic import write_coco


@pytest.fixture(scope="module")
def many(tmp_path_factory, store_factory):
    """A store of 60 small images, each with annotations."""
    d = tmp_path_factory.mktemp("many")
    write_coco(d, 60, size=48, seed=3)
    store = store_factory(tmp_path_factory.mktemp("many_store"))
    import_coco(store, d / "annotations.json", d)
    yield store
    store_factory.release(store)


def _ids(page) -> list[int]:
    return [int(caption.split()[0][1:]) for _, caption in page.items]


def test_gallery_page_two_holds_exactly_the_next_images(many):
    with many.session() as s:
        all_ids = list(s.scalars(select(Image.id).order_by(Image.id)))
    page = store_view.gallery(many, page=2, page_size=24)
    assert _ids(page) == all_ids[24:48]
    assert (page.page, page.pages, page.label) == (2, 3, "page 2 of 3")
    last = store_view.gallery(many, page=99, page_size=24)  # past the end: the last page
    assert _ids(last) == all_ids[48:] and last.page == 3
    assert _ids(store_view.gallery(many, page=0, page_size=24)) == all_ids[:24]


def test_gallery_reads_only_the_pages_annotations(many):
    asked = []

    def on_sql(conn, cursor, statement, params, context, executemany):
        if "FROM annotations" in statement:
            asked.append(params)

    event.listen(many.engine, "before_cursor_execute", on_sql)
    try:
        page = store_view.gallery(many, page=2, page_size=24)
    finally:
        event.remove(many.engine, "before_cursor_execute", on_sql)
    assert len(asked) == 1  # one query for the page's annotations, of the page's images only
    params = asked[0].values() if isinstance(asked[0], dict) else asked[0]
    assert {v for v in params if isinstance(v, int)} == set(_ids(page))


def test_page_load_does_not_draw_the_gallery_opening_the_tab_does(many):
    from annotator.background import BackgroundProposer
    from annotator.ui import build_app

    demo = build_app(many, BackgroundProposer(many))
    cfg = demo.config
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in cfg["components"]}
    gallery, tab = ids["store-gallery"], next(c["id"] for c in cfg["components"]
                                              if c.get("props", {}).get("id") == "dataset")
    deps = cfg["dependencies"]
    on_load = {d["id"] for d in deps if any(t[1] == "load" for t in d["targets"])}
    grew = True
    while grew:  # and whatever runs .then() after a load event
        more = {d["id"] for d in deps if d.get("trigger_after") in on_load}
        grew = not more <= on_load
        on_load |= more
    assert on_load and not any(gallery in d["outputs"] for d in deps if d["id"] in on_load)
    assert any([tab, "select"] in [list(t) for t in d["targets"]] and gallery in d["outputs"] for d in deps)
    assert any(ids["gallery-next"] in [t[0] for t in d["targets"]] and gallery in d["outputs"] for d in deps)


def test_a_row_that_cannot_be_drawn_is_named_and_the_rest_is_shown(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    with store.session() as s:
        rows = s.execute(select(Annotation.id, Annotation.image_id).order_by(Annotation.id)).all()
    by_image: dict[int, list[int]] = {}
    for aid, iid in rows:
        by_image.setdefault(iid, []).append(aid)
    first, second = [iid for iid, anns in sorted(by_image.items()) if len(anns) >= 2][:2]
    garbage, far = by_image[first][0], by_image[second][-1]
    with store.session() as s:  # written directly, as an old store or another tool might hold them
        s.execute(update(Annotation).where(Annotation.id == garbage)
                  .values(segmentation={"size": [96, 96], "counts": "!!garbage"}))
        s.execute(update(Annotation).where(Annotation.id == far)
                  .values(segmentation=[[0, 0, 2 ** 63, 0, 2 ** 63, 2 ** 63]]))
        s.commit()

    page = store_view.gallery(store, page=1)
    captions = {int(c.split()[0][1:]): (pic, c) for pic, c in page.items}
    assert len(captions) == 12
    for iid, bad in ((first, garbage), (second, far)):
        pic, caption = captions[iid]
        assert f"annotation {bad} cannot be drawn: " in caption
        assert f"annotation {by_image[iid][1 if bad == garbage else 0]} " not in caption
        with store.session() as s:
            name = s.get(Image, iid).file_name
        raw = np.asarray(PILImage.open(synth_dir / name).convert("RGB"))
        assert not np.array_equal(pic, raw)  # its other annotations are drawn
    assert sum("cannot be drawn" in c for _, c in page.items) == 2

    with store.session() as s:
        ann = s.get(Annotation, garbage)
        with pytest.raises(render.CannotDraw, match=f"annotation {garbage} cannot be drawn"):
            render.check_drawable(ann, 96, 96)
