import json
import zipfile

import numpy as np

from annotator import render, store_view
from db.coco_import import import_coco
from db.instances import Instances


def test_counts_and_gallery(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir)
    by_status, by_cat = store_view.counts_tables(store)
    assert ["done", 12] in by_status
    assert sum(row[1] for row in by_cat) == len(json.loads((synth_dir / "annotations.json").read_text())["annotations"])
    g = store_view.gallery(store, page_size=5).items
    assert len(g) == 5 and g[0][0].shape == (96, 96, 3) and g[0][1].startswith("#1 ")
    raw = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(synth_dir / "synth_000001.png").convert("RGB"))
    assert not np.array_equal(g[0][0], raw)  # something was drawn


def test_upload_reports_bad_files_and_export_downloads(store, synth_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    msg = store_view.upload_images(store, [str(synth_dir / "synth_000001.png"), str(bad)])
    assert "imported 1 image(s)" in msg and "bad.png: not an image" in msg
    path, _ = store_view.export(store, with_images=True, include_proposals=False, out_dir=str(tmp_path))
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["annotations.json"]  # a new image is no negative example: not written
    path, _ = store_view.export(store, with_images=True, include_proposals=False, out_dir=str(tmp_path / "all"),
                                all_images=True)
    with zipfile.ZipFile(path) as z:
        assert "images/synth_000001.png" in z.namelist()


def test_upload_coco_with_zipped_images_and_rejection_message(store, synth_dir, tmp_path):
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in synth_dir.glob("*.png"):
            zf.write(p, p.name)
    msg = store_view.upload_coco(store, str(synth_dir / "annotations.json"), [str(z)], as_proposals=True)
    assert msg.startswith("imported 12 image(s)")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert "rejected" in store_view.upload_coco(store, str(bad), [], False)


def test_draw_highlights_selected_instance():
    img = np.zeros((20, 20, 3), np.uint8)
    m = np.zeros((20, 20), bool)
    m[5:10, 5:10] = True
    inst = Instances(20, 20)
    inst.add(1, [5, 5, 5, 5], mask=m)

    def draw(**kw):
        return np.asarray(render.draw_instances(img, inst, 1.0, [0], tag=lambda i: "a", skeleton=lambda i: [], **kw))

    plain, sel = draw(), draw(selected=0)
    assert plain[7, 7].sum() > 0 and sel[7, 7].sum() > plain[7, 7].sum()


def test_images_with_a_problem_are_counted_and_listed_by_id_name_and_reason(store):
    from db import annotations
    from tests.helpers import legacy_image

    assert store_view.problem_table(store) == ("No image with a problem: the model could use every image it tried.",
                                               [])
    thin = legacy_image(store, 1, 5000, name="thin.png")
    fine = legacy_image(store, 40, 30, name="fine.png")
    annotations.record_problems(store, {thin: "1x5000: the model shrinks it to 0x192 pixels"})
    line, rows = store_view.problem_table(store)
    assert line.startswith("**1 image(s) the model could not use**")
    assert [r[:3] for r in rows] == [[thin, "thin.png", "1x5000: the model shrinks it to 0x192 pixels"]]
    assert rows[0][3]  # when
    for k in range(3):
        annotations.record_problems(store, {legacy_image(store, 2, 900 + k): "odd"})
    line, rows = store_view.problem_table(store, limit=2)
    assert "**4 image(s)" in line and "The first 2 by id:" in line and [r[0] for r in rows] == [thin, thin + 2]
    captions = dict(zip(store_view.gallery(store, page_size=10).ids,
                        (c for _, c in store_view.gallery(store, page_size=10).items)))
    assert captions[thin].endswith("· 1x5000: the model shrinks it to 0x192 pixels")
    assert "model" not in captions[fine]
