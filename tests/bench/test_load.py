"""The load benchmark, bounded to seconds: clients label through the API while a fine-tune and a proposal
worker run, and nothing a client was told is saved is missing."""

import pytest

from bench import load


@pytest.mark.slow
def test_a_short_load_run_loses_no_save_and_shows_no_error(make_store, tmp_path, capsys):
    db = make_store.settings(tmp_path / "unused").db_url  # a fresh PostgreSQL database, or None: SQLite
    assert load.main(["--clients", "3", "--seconds", "4", "--images", "80", *(["--db", db] if db else [])]) == 0
    out = capsys.readouterr().out
    assert "/label_image:" in out and ", 0 lost; errors: 0 (0 'database is locked')" in out
