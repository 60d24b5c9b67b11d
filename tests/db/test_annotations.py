"""db.annotations, the one home of annotation and image rows (issue 8): concurrent writers of proposals and
reviews on one store, ids from the database, and no SQL on those tables outside db/."""

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from annotator.labeling import LabelSession, SaveConflict
from db import annotations
from db.instances import Instances
from db.coco_import import import_coco
from db.schema import Annotation

ROOT = Path(__file__).resolve().parents[2]


def proposals_for(store, image_id, k: int) -> Instances:
    """A few proposals that differ per round ``k``."""
    im = annotations.images(store, [image_id])[image_id]
    cat = store_first_category(store)
    out = Instances(im.height, im.width)
    for j in range(3):
        m = np.zeros((im.height, im.width), bool)
        m[2 + j:10 + j + k % 3, 3:12 + j] = True
        out.add(cat, [0, 0, 0, 0], mask=m, score=0.5 + 0.1 * j, source="model", state="proposed")
    return out


def store_first_category(store) -> int:
    from db.categories import all_categories

    return all_categories(store)[0].id


def review_until_saved(store, image_id, user) -> set[int]:
    """Open, accept everything, save; on a conflict re-apply the refused edits and save again."""
    ls = LabelSession(store, image_id)
    ls.accept_all_shown(0.0)
    for _ in range(50):
        try:
            ls.save(user)
            return {it.ann_id for it in ls.instances if it.state == "accepted" and not it.deleted}
        except SaveConflict:
            ls.conflicts.review()
            if ls.pending:
                ls.conflicts.reapply_all()
            ls.accept_all_shown(0.0)
    raise AssertionError(f"image {image_id} could not be saved in 50 tries")


def run_concurrently(store, image_ids, rounds=4) -> dict[int, set[int]]:
    errors, saved = [], {}
    version = _version(store)

    def proposer():
        try:
            for k in range(rounds):
                for i in image_ids:
                    annotations.write_proposals(store, i, proposals_for(store, i, k), version)
        except Exception as e:  # noqa: BLE001 - collected and reported by the test
            errors.append(e)

    def reviewer():
        try:
            for i in image_ids:
                saved[i] = review_until_saved(store, i, "alice")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=proposer), threading.Thread(target=reviewer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return saved


def _version(store) -> int:
    from db.schema import ModelVersion

    with store.transaction() as s:
        mv = ModelVersion(size="tiny", checkpoint=None, note="test")
        s.add(mv)
        s.flush()
        return mv.id


def assert_saves_kept(store, saved: dict[int, set[int]]) -> None:
    with store.session() as s:
        accepted = {a.id for a in s.query(Annotation).filter(Annotation.review_state == "accepted")}
        ids = [a.id for a in s.query(Annotation)]
    assert len(ids) == len(set(ids))
    for image_id, kept in saved.items():
        assert kept and kept <= accepted, f"image {image_id}: saved labels lost"


def test_proposals_and_reviews_written_at_once_lose_nothing(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    saved = run_concurrently(store, annotations.image_ids(store)[:8])
    assert_saves_kept(store, saved)


def test_no_sql_on_images_or_annotations_outside_db():
    pattern = re.compile(r"(select|insert|update|delete)\((Image|Annotation)\b|s\.get\((Image|Annotation)\b|"
                         r"func\.max\(")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for folder in ("annotator", "model", "bench") for p in
                 (ROOT / folder).rglob("*.py") for n, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]
    offenders += [f"app.py:{n}" for n, line in enumerate((ROOT / "app.py").read_text().splitlines(), 1)
                  if pattern.search(line)]
    assert offenders == []
    assert not [p for p in (ROOT / "db").rglob("*.py") if "func.max(" in p.read_text()]


def test_save_review_refuses_a_stale_row_version(store, synth_dir):
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    got = annotations.load(store, 1)
    inst = Instances.from_rows(got.annotations, got.image.height, got.image.width)
    annotations.save_review(store, 1, got.image.row_version, inst, "alice", states=["accepted"] * len(inst))
    with pytest.raises(annotations.SaveConflict):
        annotations.save_review(store, 1, got.image.row_version, inst, "bob")


def test_the_training_label_count_is_what_training_would_load(store, synth_dir):
    import json

    assert annotations.training_label_count(store) == 0
    coco = json.loads((synth_dir / "annotations.json").read_text())
    import_coco(store, coco, synth_dir)
    loaded = sum(len(li.instances) for li in annotations.labeled_images(store, heldout=False))
    assert loaded > 0 and annotations.training_label_count(store) == loaded


def _unlabeled(store, tmp_path, n):
    from PIL import Image as PILImage

    from db.ingest import ingest

    src = tmp_path / "unlabeled"
    src.mkdir()
    for k in range(n):
        PILImage.new("RGB", (16, 12), (k * 9 % 256, 7, 200)).save(src / f"u{k:02d}.png")
    return [i for i, _ in ingest(store, [src]).added]


def claim_until_none_left(store, names: list[str], n: int) -> dict[str, list[int]]:
    """Workers of these names, one thread each, claiming ``n`` images at a time (version 1) until none is
    left; what each got."""
    got: dict[str, list[int]] = {name: [] for name in names}

    def work(name):
        while claimed := annotations.claim_images(store, name, version_id=1, n=n, ttl_seconds=600):
            got[name] += claimed

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_workers_claim_disjoint_images_and_an_expired_claim_is_free_again(store, tmp_path):
    ids = _unlabeled(store, tmp_path, 20)
    got = claim_until_none_left(store, ["a", "b", "c"], 3)
    every = got["a"] + got["b"] + got["c"]
    assert sorted(every) == sorted(ids)  # each image claimed exactly once, by one of them
    assert annotations.claim_images(store, "d", 1, 5, 600) == []  # all held
    # a claim that has expired (a dead worker) is taken over; giving claims back frees them at once
    holder = max(got, key=lambda k: len(got[k]))  # (how the 20 were shared depends on the scheduler)
    other = next(k for k in got if k != holder)
    assert annotations.claim_images(store, holder, 1, 2, 600) == []  # nor does a worker claim its own again
    given_back = sorted(got[holder])[:2]
    annotations.release_claims(store, other, given_back)  # only the holder can give a claim back
    assert annotations.claim_images(store, "e", 1, 2, 600) == []
    annotations.release_claims(store, holder, given_back)
    assert annotations.claim_images(store, "e", 1, 2, 600) == given_back
    expiring = annotations.claim_images(store, "f", 2, 1, ttl_seconds=-1)  # (version 2: all are free to it)
    assert annotations.claim_images(store, "g", 2, 1, 600) == expiring  # expired: another takes it over


def test_writing_proposals_ends_the_claim_and_the_version_is_not_proposed_twice(store, tmp_path):
    from db.schema import ModelVersion

    ids = _unlabeled(store, tmp_path, 3)
    with store.transaction() as s:
        s.add(ModelVersion(id=5, size="tiny", checkpoint="x.pt"))
    claimed = annotations.claim_images(store, "w", 5, 2, 600)
    annotations.write_proposals_of_images(store, {i: Instances(12, 16) for i in claimed}, 5)
    assert annotations.claim_images(store, "w2", 5, 10, 600) == [ids[2]]  # version 5 proposed on the others
    assert annotations.claim_images(store, "w3", 6, 10, 600) == claimed  # a new version: proposed on again


def test_a_recorded_problem_ends_the_claim_is_listed_and_is_cleared_by_proposals(store, tmp_path):
    from db.schema import Image, ModelVersion
    from db.stats import stats

    ids = _unlabeled(store, tmp_path, 3)
    with store.transaction() as s:
        s.add(ModelVersion(id=5, size="tiny", checkpoint="x.pt"))
    claimed = annotations.claim_images(store, "w", 5, 3, 600)
    with store.session() as s:
        before = {im.id: (im.updated_at, im.row_version, im.status) for im in s.query(Image)}
    annotations.record_problems(store, {ids[1]: "the model cannot look at it", 10 ** 6: "gone"}, version_id=5)
    assert annotations.images(store, [ids[1]])[ids[1]].problem == "the model cannot look at it"
    n, listed = annotations.images_with_problems(store)
    assert n == 1 and [(p.id, p.file_name, p.problem) for p in listed] == [(ids[1], "u01.png",
                                                                           "the model cannot look at it")]
    assert listed[0].at is not None
    with store.session() as s:  # labels, status, row version and the review order are untouched
        im = s.get(Image, ids[1])
        assert (im.updated_at, im.row_version, im.status) == before[ids[1]] and im.claimed_by is None
    annotations.release_claims(store, "w", claimed)
    assert annotations.claim_images(store, "w2", 5, 10, 600) == [ids[0], ids[2]]  # version 5 looked at it
    assert ids[1] in annotations.claim_images(store, "w3", 6, 10, 600)  # a new version tries it again
    lines = stats(store).lines()
    assert "images the model could not use (skipped, with the reason): 1" in lines
    assert any(line.startswith(f"  #{ids[1]} u01.png: the model cannot look at it (") for line in lines)
    annotations.write_proposals_of_images(store, {ids[1]: Instances(12, 16)}, 6)  # used successfully: cleared
    assert annotations.images_with_problems(store) == (0, []) and stats(store).problems == 0
    annotations.record_problems(store, {ids[0]: "x" * 2000})
    assert len(annotations.images(store, [ids[0]])[ids[0]].problem) == annotations.MAX_PROBLEM
    annotations.clear_problems(store, [ids[0], ids[2]])
    assert annotations.images_with_problems(store)[0] == 0
