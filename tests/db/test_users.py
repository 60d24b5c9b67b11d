"""Accounts, roles and reviewers' verdicts (db.users, db.annotations.give_verdict and history)."""

import pytest

from annotator.labeling import LabelSession
from db import annotations, users
from db.annotations import SaveConflict
from db.coco_import import import_coco
from db.errors import UserError


@pytest.fixture
def cheap_kdf(monkeypatch):
    """scrypt at a tiny cost, for the tests that are not about the hash itself (verify reads the cost from
    the stored hash, so these hashes still verify the same way)."""
    monkeypatch.setattr(users, "SCRYPT_N", 2 ** 10)


def test_a_password_is_stored_as_a_salted_scrypt_hash_at_owasp_cost():
    stored = users.hash_password("correct horse")
    kind, n, r, p, salt, digest = stored.split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", 2 ** 17, 8, 1)
    assert "correct horse" not in stored and len(salt) >= 20 and len(digest) >= 40
    assert users.verify_password("correct horse", stored)
    assert not users.verify_password("correct horsf", stored)
    assert users.hash_password("correct horse") != stored  # a fresh salt each time


@pytest.mark.parametrize("stored", [None, "", "plain", "scrypt$1$8$1$AAAA$AAAA", "scrypt$1099511627776$8$1$AA$AA",
                                    "md5$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA", "scrypt$x$8$1$a$b",
                                    "scrypt$1024$8$1$not base64!$AAAA"])
def test_a_missing_or_malformed_hash_never_verifies(cheap_kdf, stored):
    assert not users.verify_password("anything at all", stored)


def test_accounts_are_added_changed_and_removed_by_name(store, cheap_kdf):
    users.add(store, "alice", "labeler", "alice-pass")
    users.add(store, "Bob Smith", "reviewer", "bob-passw")
    with pytest.raises(UserError, match="exists already"):
        users.add(store, "alice", "admin", "other-pass")
    assert [(a.name, a.role) for a in users.accounts(store)] == [("Bob Smith", "reviewer"), ("alice", "labeler")]
    assert users.login(store, "alice", "alice-pass") and not users.login(store, "alice", "bob-passw")
    assert not users.login(store, "mallory", "alice-pass") and not users.login(store, None, "x")
    users.set_role(store, "alice", "admin")
    users.set_password(store, "alice", "new-password")
    assert users.role_of(store, "alice") == "admin" and users.login(store, "alice", "new-password")
    users.remove(store, "alice")
    assert users.role_of(store, "alice") is None and users.count(store) == 1
    for bad in (lambda: users.set_role(store, "alice", "admin"), lambda: users.remove(store, "alice"),
                lambda: users.set_password(store, "nobody", "long enough")):
        with pytest.raises(UserError, match="no user"):
            bad()


@pytest.mark.parametrize("name", ["", " alice", "alice ", "a:b", "tab\there", "new\nline", "x" * 101, 5, None,
                                  "zero\u200bwidth"])
def test_bad_names_are_refused_by_name(store, cheap_kdf, name):
    with pytest.raises(UserError, match="user name"):
        users.add(store, name, "labeler", "long enough")
    assert users.count(store) == 0


def test_bad_roles_and_passwords_are_refused(store, cheap_kdf):
    for role in ("root", "", None, "Admin"):
        with pytest.raises(UserError, match="role"):
            users.add(store, "alice", role, "long enough")
    for pw in ("short", "", None, "x" * 1025):
        with pytest.raises(UserError, match="password"):
            users.add(store, "alice", "labeler", pw)
    assert users.count(store) == 0


def test_each_role_may_do_what_the_ones_below_it_may():
    table = {role: {a for a in users.NEEDS if users.may(role, a)} for role in ("labeler", "reviewer", "admin")}
    assert table["labeler"] == {"label"}
    assert table["reviewer"] == {"label", "review"}
    assert table["admin"] == set(users.NEEDS)
    assert not any(users.may(None, a) or users.may("root", a) for a in users.NEEDS)
    with pytest.raises(UserError, match="needs the admin role; alice is a labeler"):
        users.require("labeler", "train", "alice")
    with pytest.raises(UserError, match="no account"):
        users.require(None, "label", "ghost")


def _labeled(store, synth_dir, user="alice"):
    """The synthetic store, with image 1 saved by ``user`` in the Label tab (done)."""
    import_coco(store, synth_dir / "annotations.json", synth_dir, as_proposals=True)
    ls = LabelSession(store, 1)
    ls.accept_all_shown(0.0)
    ls.save(user)
    return ls


def test_a_reviewer_approves_or_sends_back_someone_elses_saved_labels(store, synth_dir):
    _labeled(store, synth_dir)
    assert annotations.queue(store, annotations.TO_REVIEW) == [1]
    ls = LabelSession(store, 1)
    with pytest.raises(UserError, match="saved these labels last"):
        ls.give_verdict("approved", "alice", "reviewer")
    with pytest.raises(UserError, match="needs a note"):
        ls.give_verdict("sent_back", "bob", "reviewer", "   ")
    assert "sent back" in ls.give_verdict("sent_back", "bob", "reviewer", "the left arm is missing")
    assert annotations.images(store, [1])[1].status == "in_review"
    assert annotations.queue(store)[0] == 1  # first in the labeling queue
    assert annotations.queue(store, annotations.TO_REVIEW) == []
    lines = annotations.history(store, 1)
    assert [(e.user, e.what.split(":")[0], e.current) for e in lines] == [("alice", "saved", False),
                                                                         ("bob", "sent back", True)]
    assert "the left arm is missing" in lines[-1].what
    assert "accepted unchanged" in lines[0].what

    fix = LabelSession(store, 1)  # alice fixes it and saves: it waits for review again
    fix.accept_all_shown(0.0)
    fix.dirty = True
    fix.save("alice")
    assert annotations.queue(store, annotations.TO_REVIEW) == [1] and 1 not in annotations.sent_back(store)
    assert not annotations.history(store, 1)[-2].current  # the verdict was on the labels before this save
    again = LabelSession(store, 1)
    assert again.give_verdict("approved", "bob", "reviewer") == "image 1 approved"
    assert annotations.queue(store, annotations.TO_REVIEW) == []
    assert annotations.history(store, 1)[-1].current


def test_a_verdict_is_refused_on_changed_unfinished_or_edited_labels_and_below_reviewer(store, synth_dir):
    _labeled(store, synth_dir)
    stale = LabelSession(store, 1)
    other = LabelSession(store, 1)
    other.reject(0)
    other.save("carol")  # the labels changed after bob opened them
    with pytest.raises(SaveConflict, match="changed in the store"):
        stale.give_verdict("approved", "bob", "reviewer")
    labeler = LabelSession(store, 1)
    with pytest.raises(UserError, match="needs the reviewer role"):
        labeler.give_verdict("approved", "dave", "labeler")
    editing = LabelSession(store, 1)
    editing.reject(1)
    with pytest.raises(UserError, match="save or discard"):
        editing.give_verdict("approved", "bob", "reviewer")
    unfinished = LabelSession(store, 2)  # proposals, nobody saved it
    with pytest.raises(UserError, match="not done"):
        unfinished.give_verdict("approved", "bob", "reviewer")
    with pytest.raises(UserError, match="verdict"):
        annotations.give_verdict(store, 1, LabelSession(store, 1).row_version, "maybe", "bob")
    with pytest.raises(UserError, match="at most"):
        annotations.give_verdict(store, 1, LabelSession(store, 1).row_version, "sent_back", "bob", "x" * 2001)
    assert [e.what.split(":")[0] for e in annotations.history(store, 1)] == ["saved", "saved"]
