"""Who did what, in figures (issue 20): per labeler and day, from hand-made save (Review) and verdict rows."""

import datetime as dt

import pytest

from db.schema import Image, Review, Verdict
from db.stats import labeler_stats, labeler_lines

DAY1, DAY2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)


def at(day: dt.date, hh: int, mm: int = 0, ss: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm, ss))


def save(image_id, user, when, seconds, proposals=0, unchanged=0) -> Review:
    return Review(image_id=image_id, user=user, opened_at=when - dt.timedelta(seconds=seconds), saved_at=when,
                  active_seconds=seconds, proposals=proposals, accepted_unchanged=unchanged,
                  accepted_edited=proposals - unchanged)


def verdict(image_id, user, when, which="approved") -> Verdict:
    return Verdict(image_id=image_id, row_version=1, verdict=which, note="fix it" if which == "sent_back" else "",
                   user=user, at=when)


def two_labelers_two_days(store) -> None:
    """alice and bob label on two days; carol and dave review."""
    with store.transaction() as s:
        s.add_all(Image(id=i, file_name=f"{i}.png", content_hash=f"{i:064d}", media_path=f"{i}.png", width=16,
                        height=12, status="done") for i in range(1, 6))
        s.flush()
        s.add_all([
            save(1, "alice", at(DAY1, 9), 30, proposals=4, unchanged=3),
            save(2, "alice", at(DAY1, 9, 10), 50),
            save(3, "bob", at(DAY1, 10), 20, proposals=2, unchanged=0),
            save(1, "alice", at(DAY1, 11), 10),  # image 1 again, after it was sent back
            save(3, "bob", at(DAY2, 9), 40),
            save(4, "alice", at(DAY2, 23, 59, 59), 5, proposals=1, unchanged=1),  # the day's last second
        ])
        s.add_all([
            verdict(1, "dave", at(DAY1, 10, 30), "sent_back"),  # alice's 9:00 save
            verdict(3, "carol", at(DAY1, 10, 5)),  # bob's day-1 save: approved, then sent back the next day
            verdict(3, "dave", at(DAY2, 8), "sent_back"),
            verdict(1, "carol", at(DAY1, 11, 30)),  # alice's 11:00 save
            verdict(2, "carol", at(DAY1, 12)),  # alice's 9:10 save
            verdict(5, "carol", at(DAY2, 10)),  # imported labels: no save to judge
        ])


def figures(days):
    return [(d.day, d.user, d.images_saved, d.saves, d.seconds_per_image, d.judged, d.sent_back, d.sent_back_share,
             d.proposals, d.accepted_unchanged, d.accepted_unchanged_share) for d in days]


def test_each_labeler_and_day_in_figures(store):
    two_labelers_two_days(store)
    assert figures(labeler_stats(store)) == [
        (DAY2, "alice", 1, 1, 5.0, 0, 0, None, 1, 1, 1.0),
        (DAY2, "bob", 1, 1, 40.0, 0, 0, None, 0, 0, None),
        (DAY1, "alice", 2, 3, 45.0, 3, 1, pytest.approx(1 / 3), 4, 3, 0.75),  # 90 s over two images
        (DAY1, "bob", 1, 1, 20.0, 1, 1, 1.0, 2, 0, 0.0),  # approved and then sent back: one judged save
    ]


def test_the_days_asked_for_count_their_saves_whenever_the_verdicts_came(store):
    two_labelers_two_days(store)
    assert [(d.day, d.user) for d in labeler_stats(store, since=DAY2)] == [(DAY2, "alice"), (DAY2, "bob")]
    day1 = labeler_stats(store, until=DAY1)
    assert [(d.day, d.user, d.judged, d.sent_back) for d in day1] == [(DAY1, "alice", 3, 1), (DAY1, "bob", 1, 1)]
    assert labeler_stats(store, since=DAY2 + dt.timedelta(days=1)) == []
    assert [d.day for d in labeler_stats(store, since=DAY1, until=DAY2)] == [DAY2, DAY2, DAY1, DAY1]


def test_the_table_says_what_each_share_is_of(store):
    two_labelers_two_days(store)
    lines = labeler_lines(labeler_stats(store))
    assert lines[0].split() == ["day", "(UTC)", "labeler", "images", "s/image", "judged", "sent", "back",
                                "proposals", "unchanged"]
    assert lines[1].split() == ["2026-03-02", "alice", "1", "5.0", "0", "-", "1", "100%"]
    assert lines[3].split() == ["2026-03-01", "alice", "2", "45.0", "3", "33%", "4", "75%"]
    assert "sent back: of the judged saves" in lines[-1]
    assert labeler_lines([]) == ["no saves in the Label tab (in these days)"]
