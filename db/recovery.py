"""What every command does when it opens a store, so that a crash or a kill (of an import, a save, a training
run, ``propose``) leaves nothing half-done behind: media files an import wrote without committing their rows
are removed, jobs whose process is gone are marked failed, and checkpoint files a killed training run left
half-written (``*.part``) are removed once no training job is running. Rows need no repair: every write is one
transaction, so a kill leaves it either committed or not there at all."""

from __future__ import annotations

from db import jobs
from db.ingest import clean_orphan_media
from db.store import Store


def remove_partial_checkpoints(store: Store) -> int:
    """Remove ``*.part`` files under the models folder (checkpoints are written to one and renamed when
    whole), unless a training job is active and may be writing one (call after ``jobs.fail_orphans``, so a
    dead job does not count). Returns how many went."""
    if jobs.active(store, "train") is not None:
        return 0
    removed = 0
    for part in store.settings.models_dir.glob("*.part"):
        part.unlink(missing_ok=True)
        removed += 1
    return removed


def recover(store: Store) -> list[str]:
    """Clean up after whatever was killed while using this store; returns one note per thing done."""
    notes = []
    media = clean_orphan_media(store)
    if media:
        notes.append(f"removed {media} media file(s) that no image refers to (left by an interrupted import)")
    failed = jobs.fail_orphans(store)
    if failed:
        notes.append(f"marked {failed} job(s) failed whose process had ended without finishing")
    parts = remove_partial_checkpoints(store)
    if parts:
        notes.append(f"removed {parts} half-written checkpoint file(s) (left by an interrupted fine-tune)")
    return notes
