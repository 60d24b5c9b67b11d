"""A reviewer's verdict racing a labeler's save of the same image (issue 20): the two are one serialized decision
on every database, so the outcome is always one of the two serial orders, never a mix of both."""

import threading

from PIL import Image as PILImage
from sqlalchemy import select

from db import annotations
from db.annotations import SaveConflict
from db.ingest import ingest
from db.instances import Instances
from db.schema import Verdict, utcnow

ROUNDS = 30


def _done_image(store, tmp_path) -> int:
    """One image, saved (done) by alice."""
    src = tmp_path / "images"
    src.mkdir()
    PILImage.new("RGB", (16, 12), (40, 90, 200)).save(src / "one.png")
    image_id = ingest(store, [src]).added[0][0]
    _save(store, image_id, annotations.images(store, [image_id])[image_id].row_version)
    return image_id


def _save(store, image_id: int, row_version: int) -> None:
    """alice saves the image (no labels) as done, as the Label tab does: with its Review row."""
    now = utcnow()
    annotations.save_review(store, image_id, row_version, Instances(12, 16), "alice",
                            review=dict(user="alice", opened_at=now, saved_at=now))


def _race(store, image_id: int, row_version: int) -> dict[str, object]:
    """alice's save and bob's send-back of the labels at ``row_version``, released together; what each got
    (None: it went through, else the exception)."""
    barrier = threading.Barrier(2)
    got: dict[str, object] = {}

    def run(name, call):
        barrier.wait()
        try:
            call()
            got[name] = None
        except Exception as e:  # noqa: BLE001 - reported by the test
            got[name] = e

    threads = [threading.Thread(target=run, args=("save", lambda: _save(store, image_id, row_version))),
               threading.Thread(target=run, args=("verdict", lambda: annotations.give_verdict(
                   store, image_id, row_version, "sent_back", "bob", "the cat's tail is missing")))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def _verdict_versions(store, image_id: int) -> list[int]:
    with store.session() as s:
        return list(s.scalars(select(Verdict.row_version).where(Verdict.image_id == image_id).order_by(Verdict.id)))


def test_a_send_back_racing_a_save_ends_as_one_of_the_two_serial_orders(make_store, tmp_path):
    store = make_store(tmp_path / "store")
    image_id = _done_image(store, tmp_path)
    for k in range(ROUNDS):
        before = annotations.images(store, [image_id])[image_id]
        assert before.status == "done"
        verdicts_before = _verdict_versions(store, image_id)
        got = _race(store, image_id, before.row_version)
        after = annotations.images(store, [image_id])[image_id]
        new_verdicts = _verdict_versions(store, image_id)[len(verdicts_before):]
        for name, e in got.items():  # nothing else than a refusal of the loser
            assert e is None or isinstance(e, SaveConflict), f"round {k}: the {name} failed: {e!r}"
        assert None in got.values(), f"round {k}: both were refused"
        if got["verdict"] is not None:  # the save first: the send-back is on labels no longer there
            assert new_verdicts == [] and got["save"] is None
            assert (after.status, after.row_version) == ("done", before.row_version + 1), f"round {k}"
        else:  # the verdict first, on the labels as they were when it was written ...
            assert new_verdicts == [before.row_version], f"round {k}"
            if got["save"] is None:  # ... then the save, made on the same labels, goes through: the image is
                # done and waits for review again (never a done save left in review)
                assert (after.status, after.row_version) == ("done", before.row_version + 1), f"round {k}"
            else:  # ... then the save refused (were saves over a send-back refused): it waits with the note
                assert (after.status, after.row_version) == ("in_review", before.row_version), f"round {k}"
                _save(store, image_id, after.row_version)  # (done again for the next round)
