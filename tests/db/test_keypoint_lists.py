"""A keypoint list in the store always fits its category's list (issue 21): a save checks it against the
category as it is at the save, and a category's list changes only while no annotation holds keypoints (an empty
list or JSON null holds none)."""

import numpy as np
import pytest
from sqlalchemy import select

from annotator.labeling import LabelSession
from db import annotations, categories as cat_db
from db.coco_import import import_coco
from db.errors import UserError
from db.instances import Instances
from db.schema import Annotation
from tests.db.test_coco import _handmade


def _box_mask(h=30, w=40):
    m = np.zeros((h, w), bool)
    m[5:15, 5:20] = True
    return m


def _keypoints(store, image_id):
    with store.session() as s:
        return {a.id: a.keypoints for a in s.scalars(select(Annotation).where(Annotation.image_id == image_id))}


def test_a_save_of_keypoints_placed_on_a_list_changed_meanwhile_is_refused_by_name(store, tmp_path):
    """An admin made 'hand' one keypoint while a labeler had three placed, unsaved: the save stored a 9-value
    list for a 1-keypoint category. Now it is refused, naming the category and both counts, nothing is written,
    the session's keypoints are put on the new list by name, and the next save stores a list that fits."""
    coco, d = _handmade(tmp_path)
    import_coco(store, coco, d)
    hand = cat_db.add(store, "hand", keypoints=["wrist", "thumb", "index"])
    ls = LabelSession(store, 17)
    i = ls.new_instance(hand, mask=_box_mask())
    for name, x in (("wrist", 6), ("thumb", 8), ("index", 10)):
        ls.set_keypoint(name, x, 7, index=i)
    cat_db.update_category(store, hand, keypoints=["thumb"])  # no annotation holds keypoints of it yet: allowed
    before = _keypoints(store, 17)
    with pytest.raises(UserError) as e:
        ls.save("alice")
    msg = str(e.value)
    assert "category 'hand' lists 1 keypoint(s) now, but a new instance holds 3" in msg and "nothing was written" in msg
    assert "put on the new list by name (1 kept, 2 dropped" in msg
    assert _keypoints(store, 17) == before
    assert ls.instances.keypoints[i] == [8, 7, 2]
    ls.save("alice")
    assert sorted(len(k) for k in _keypoints(store, 17).values() if k) == [3, 51]


def test_a_page_that_reads_the_categories_again_fits_its_unsaved_keypoints_by_name(store, tmp_path):
    coco, d = _handmade(tmp_path)
    import_coco(store, coco, d)
    hand = cat_db.add(store, "hand", keypoints=["wrist", "thumb"])
    ls = LabelSession(store, 17)
    i = ls.new_instance(hand, mask=_box_mask())
    ls.set_keypoint("thumb", 9, 9, index=i)
    cat_db.update_category(store, hand, keypoints=["pinky", "thumb", "wrist"])
    said = ls.refresh_categories()
    assert "1 instance(s) were put on the new list by name (1 kept, 0 dropped" in said
    assert ls.instances.keypoints[i] == [0, 0, 0, 9, 9, 2, 0, 0, 0]
    assert ls.refresh_categories() is None
    ls.save("alice")


def test_save_review_itself_refuses_a_list_that_does_not_fit(store, tmp_path):
    coco, d = _handmade(tmp_path)
    import_coco(store, coco, d)
    got = annotations.load(store, 17)
    inst = Instances.from_rows(got.annotations, 30, 40)
    k = inst.ann_ids.index(6)  # the person: 17 keypoints
    inst.keypoints[k] = [1, 1, 2] * 3
    inst.edited[k] = True
    with pytest.raises(annotations.KeypointsDoNotFit, match="category 'person' lists 17 keypoint.s. now, but "
                                                            "annotation 6 holds 3"):
        annotations.save_review(store, 17, got.image.row_version, inst, "alice")
    assert len(_keypoints(store, 17)[6]) == 51


def test_adding_keypoint_names_counts_only_real_keypoint_lists(store, tmp_path):
    """Masks without keypoints hold JSON null in the keypoints column: they were counted ("2 annotation(s) hold
    keypoints", in fact none), so keypoint names could not be added to a category in use."""
    coco, d = _handmade(tmp_path)
    import_coco(store, coco, d)  # 'blob' (42): two masks, no keypoints; 'person' (1): one with 17 keypoints
    with store.transaction() as s:  # an empty list holds no keypoint either
        s.query(Annotation).filter(Annotation.id == 5).update({"keypoints": []})
    cat_db.update_category(store, 42, keypoints=["top", "bottom"])
    with store.session() as s:
        assert [a.keypoints for a in s.scalars(select(Annotation).where(Annotation.category_id == 42))] == [None, None]
    with pytest.raises(UserError, match=r"1 annotation\(s\) of 'person' hold keypoints in the current order \(a list "
                                        r"of 17\).*\(this list has 2\)"):
        cat_db.update_category(store, 1, keypoints=["a", "b"])
    cat_db.update_category(store, 1, keypoints=[f"p{i}" for i in range(17)])  # renaming is allowed


@pytest.mark.parametrize("field, value, says", [
    ("name", "n" * 300, "is 300 characters long, over the store's limit of 200"),
    ("supercategory", "s\x00", "holds a NUL character"),
])
def test_category_texts_over_the_store_limits_are_refused_alike(store, field, value, says):
    with pytest.raises(UserError, match=f"category {field} .* {says}"):
        cat_db.add(store, **{"name": "ok", field: value})
    cid = cat_db.add(store, "fine")
    with pytest.raises(UserError, match=f"category {field} .* {says}"):
        cat_db.update_category(store, cid, **{field: value})
    assert [c.name for c in cat_db.all_categories(store)] == ["fine"]


def test_a_shorter_keypoint_list_drops_the_skeleton_pairs_past_it(store):
    """A skeleton pair past the list made an export that import refused ("pair index out of range")."""
    hand = cat_db.add(store, "hand", keypoints=["wrist", "thumb", "index"], skeleton=[[1, 2], [2, 3]])
    cat_db.update_category(store, hand, keypoints=["wrist", "thumb"])
    assert [c.skeleton for c in cat_db.all_categories(store)] == [[[1, 2]]]


def test_a_category_changed_during_an_import_refuses_the_import(store, tmp_path, monkeypatch):
    """The file's annotations were checked against the store's list; an admin changes it before the rows are
    written: the import is refused whole, naming the category, instead of storing lists that no longer fit."""
    from db import coco_import

    coco, d = _handmade(tmp_path)
    coco["categories"].append({"id": 7, "name": "hand", "keypoints": ["wrist", "thumb"]})
    import_coco(store, {**coco, "images": [], "annotations": []}, d)
    coco["annotations"].append({"id": 70, "image_id": 17, "category_id": 7, "bbox": [1, 1, 4, 4], "area": 16,
                                "keypoints": [2, 2, 2, 3, 3, 2]})
    real = coco_import._check_against_store

    def meanwhile(*a, **k):
        got = real(*a, **k)
        cat_db.update_category(store, 7, keypoints=["wrist"])  # no annotation holds keypoints of it yet
        return got

    monkeypatch.setattr(coco_import, "_check_against_store", meanwhile)
    with pytest.raises(coco_import.CocoRejected, match="category id 7: field 'keypoints': 'hand' was changed in the "
                                                       r"store during the import \(it lists 1 keypoint\(s\) now\)"):
        import_coco(store, coco, d)
    with store.session() as s:
        assert s.query(Annotation).count() == 0
