"""A COCO import onto images already in the store (issue 21): the merge rule of db.coco_import.import_coco.
An image with 50 unreviewed proposals used to become done and be exported as fully labeled; a done image
imported again as proposals went back to proposed."""

import copy

from db import annotations, coco_export
from db.coco_import import import_coco, summary
from db.ingest import ingest
from db.schema import Annotation, Image


def _renumbered(coco: dict, offset: int) -> dict:
    """The same file with new annotation ids (a second file about the same images)."""
    out = copy.deepcopy(coco)
    for a in out["annotations"]:
        a["id"] += offset
    return out


def _statuses(store) -> dict[int, str]:
    with store.session() as s:
        return dict(s.query(Image.id, Image.status).all())


def _states(store) -> dict[str, int]:
    with store.session() as s:
        rows = s.query(Annotation.review_state).all()
    return {st: sum(1 for (r,) in rows if r == st) for st in ("proposed", "accepted")}


def test_labels_imported_onto_unreviewed_proposals_leave_them_unreviewed_and_the_image_not_done(
        store, synth_dir, synth_coco):
    import_coco(store, synth_coco, synth_dir, as_proposals=True)
    n = len(synth_coco["annotations"])
    assert set(_statuses(store).values()) == {"proposed"}
    r = import_coco(store, _renumbered(synth_coco, 100_000), synth_dir)
    assert set(_statuses(store).values()) == {"proposed"}  # the proposals still wait for a person
    assert _states(store) == {"proposed": n, "accepted": n}
    assert r["images_waiting_for_proposals_to_be_reviewed"] == 12 and "hold proposals nobody reviewed" in summary(r)
    assert coco_export.build(store)["images"] == []  # nothing unreviewed is exported as if it were background
    # a person reviews one image: it is done, and only then exported, with the labels they accepted
    from annotator.labeling import LabelSession

    image_id = synth_coco["images"][0]["id"]
    ls = LabelSession(store, image_id)
    ls.reject_rest()
    ls.save("alice")
    ds = coco_export.build(store)
    assert [im["id"] for im in ds["images"]] == [image_id]
    assert {a["id"] for a in ds["annotations"]} == {a["id"] + 100_000 for a in synth_coco["annotations"]
                                                    if a["image_id"] == image_id}


def test_proposals_imported_onto_a_done_image_are_left_out_and_it_stays_done(store, synth_dir, synth_coco):
    import_coco(store, synth_coco, synth_dir)
    before = coco_export.dumps(coco_export.build(store))
    with store.session() as s:
        versions = dict(s.query(Image.id, Image.row_version).all())
    r = import_coco(store, _renumbered(synth_coco, 100_000), synth_dir, as_proposals=True)
    assert set(_statuses(store).values()) == {"done"}
    assert r["proposals_left_out"] == len(synth_coco["annotations"]) and r["annotations"] == 0
    assert "proposal(s) on 12 image(s) already done were left out" in summary(r)
    assert _states(store)["proposed"] == 0
    assert coco_export.dumps(coco_export.build(store)) == before
    assert coco_export.dumps(coco_export.build(store, include_proposals=True)) == before
    with store.session() as s:
        assert dict(s.query(Image.id, Image.row_version).all()) == versions  # nothing of them changed


def test_images_not_labeled_yet_follow_what_the_import_brings(store, synth_dir, synth_coco):
    """New images (import-images) become proposed under proposals and done under labels; an image someone
    opened and left (in review, no proposals) is done once labels come; a save waiting for a reviewer keeps
    waiting, now on the labels as they are."""
    ids = [im["id"] for im in synth_coco["images"]]
    ingest(store, [synth_dir / im["file_name"] for im in synth_coco["images"]])
    with store.session() as s:  # import-images gave them ids of the database's: use the file's ones instead
        by_name = dict(s.query(Image.file_name, Image.id).all())
    file_ids = {im["id"]: by_name[im["file_name"]] for im in synth_coco["images"]}
    coco = copy.deepcopy(synth_coco)
    for im in coco["images"]:
        im["id"] = file_ids[im["id"]]
    for a in coco["annotations"]:
        a["image_id"] = file_ids[a["image_id"]]
    half = set(file_ids[i] for i in ids[:6])
    part = lambda keep: {**coco, "images": [im for im in coco["images"] if keep(im["id"])],  # noqa: E731
                         "annotations": [a for a in coco["annotations"] if keep(a["image_id"])]}
    import_coco(store, part(lambda i: i in half), synth_dir, as_proposals=True)
    opened = min(set(file_ids.values()) - half)
    annotations.mark_in_review(store, opened)
    import_coco(store, part(lambda i: i == opened), synth_dir, needs_review=True, user="bob")
    st = _statuses(store)
    assert {st[i] for i in half} == {"proposed"} and st[opened] == "done"
    assert annotations.awaiting_review(store) == [opened]
    rest = set(file_ids.values()) - half - {opened}
    import_coco(store, part(lambda i: i in rest), synth_dir)
    assert {_statuses(store)[i] for i in rest} == {"done"}
    assert annotations.awaiting_review(store) == [opened]
