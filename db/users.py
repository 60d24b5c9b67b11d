"""Accounts and roles: who may log in, and what each role may do.

- A password is stored as a scrypt hash (RFC 7914, Python's ``hashlib.scrypt``) with its own random salt and
  its cost parameters, ``scrypt$N$r$p$salt$hash`` (base64), never as itself.
- A login's *stamp* is derived from the stored hash (``stamp``): it changes when the password is set again
  (a new salt each time) and is gone with the account, so a login session that keeps the stamp it logged in
  with knows, on its next request, that it no longer stands (annotator.access.Sessions). It is kept on the
  server only; it is not a secret the browser holds.
- Roles build on each other: a *labeler* labels; a *reviewer* also approves or sends back others' work; an
  *admin* also imports, trains, activates models, edits categories and exports. ``require`` is the one check
  every server entry point makes (the UI only hides what a role cannot do).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import unicodedata

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from db.errors import UserError
from db.schema import ROLES, Assignment, Claim, User
from db.store import Store

# OWASP's minimum for scrypt: N=2^17, r=8, p=1 (128 MiB of memory, about a third of a second a hash)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 17, 8, 1
MAX_SCRYPT_N = 2 ** 20  # a stored hash asking for more is refused, not computed
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_NAME = 100

# what each action needs; every role may do what the roles before it in ROLES may
NEEDS = {
    "label": "labeler",  # open images, edit, save, assist, propose again
    "review": "reviewer",  # approve or send back someone else's labels
    "import": "admin",  # images, zips, COCO files
    "categories": "admin",  # add, rename, delete categories
    "train": "admin",  # fine-tune, cancel a job
    "activate": "admin",  # make a model version the active one
    "export": "admin",
    "assign": "admin",  # hand images to a labeler, take them back
}
ACTIONS_TEXT = {"label": "label images", "review": "approve or send back labels", "import": "import images",
                "categories": "edit categories", "train": "train or cancel training",
                "activate": "activate a model version", "export": "export the dataset",
                "assign": "assign images to people"}


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    role: str
    created_at: dt.datetime


def may(role: str | None, action: str) -> bool:
    """Whether ``role`` may do ``action`` (a key of NEEDS). No role (no such account) may do nothing."""
    if action not in NEEDS:
        raise ValueError(f"unknown action {action!r}")
    return role in ROLES and ROLES.index(role) >= ROLES.index(NEEDS[action])


def require(role: str | None, action: str, who: str = "") -> None:
    """UserError naming the role needed unless ``role`` may do ``action``."""
    if may(role, action):
        return
    if role is None:
        raise UserError(f"{who or 'this login'} has no account here (removed?): log in again")
    raise UserError(f"to {ACTIONS_TEXT[action]} needs the {NEEDS[action]} role; {who or 'you'} "
                    f"{'are' if not who else 'is'} a {role}")


def check_name(name) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise UserError(f"user name {name!r}: 1 to {MAX_NAME} characters")
    if name != name.strip() or ":" in name or any(unicodedata.category(c)[0] in "CZ" and c != " " for c in name):
        raise UserError(f"user name {name!r}: no spaces at either end, no ':' and no control characters")
    return name


def check_role(role) -> str:
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_password(password) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=256 * r * n + 2 ** 20)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(check_password(password), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (hash_password's text), compared in constant time. With no
    stored hash (an unknown name) a hash is computed all the same, so both answers take as long."""
    try:
        kind, n, r, p, salt, digest = (stored or "").split("$")
        n, r, p = int(n), int(r), int(p)
        salt, digest = base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)
        if kind != "scrypt" or not (2 <= n <= MAX_SCRYPT_N and 1 <= r <= 32 and 1 <= p <= 4):
            raise ValueError(stored)
    except ValueError:
        n, r, p, salt, digest = SCRYPT_N, SCRYPT_R, SCRYPT_P, b"\0" * 16, None
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        password = ""
    got = _scrypt(password, salt, n, r, p)
    return digest is not None and hmac.compare_digest(got, digest)


def add(store: Store, name: str, role: str, password: str) -> None:
    row = User(name=check_name(name), role=check_role(role), password_hash=hash_password(password))
    try:
        with store.transaction() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise UserError(f"user {name!r} exists already (app.py user role / user password change it)")
            s.add(row)
    except IntegrityError:  # added by someone else at the same moment
        raise UserError(f"user {name!r} exists already") from None


def _change(store: Store, name: str, **values) -> None:
    with store.transaction() as s:
        if s.execute(update(User).where(User.name == name).values(**values)).rowcount != 1:
            raise UserError(f"no user {name!r}")


def set_role(store: Store, name: str, role: str) -> None:
    _change(store, name, role=check_role(role))


def set_password(store: Store, name: str, password: str) -> None:
    _change(store, name, password_hash=hash_password(password))


def remove(store: Store, name: str) -> None:
    """Remove the account; the images it held or was assigned are free for the others at once."""
    with store.transaction() as s:
        if s.execute(delete(User).where(User.name == name)).rowcount != 1:
            raise UserError(f"no user {name!r}")
        s.execute(delete(Claim).where(Claim.user == name))
        s.execute(delete(Assignment).where(Assignment.user == name))


def accounts(store: Store) -> list[Account]:
    with store.session() as s:
        return [Account(u.name, u.role, u.created_at) for u in s.scalars(select(User).order_by(User.name))]


def count(store: Store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(User))


def role_of(store: Store, name: str | None) -> str | None:
    if not isinstance(name, str):
        return None
    with store.session() as s:
        return s.scalar(select(User.role).where(User.name == name))


def _stored_hash(store: Store, name) -> str | None:
    if not isinstance(name, str):
        return None
    with store.session() as s:
        return s.scalar(select(User.password_hash).where(User.name == name))


def _stamp(stored: str) -> str:
    return hashlib.sha256(stored.encode("utf-8")).hexdigest()[:32]


def stamp(store: Store, name) -> str | None:
    """The account's stamp as it is now (see the module's docstring), or None when there is no such account."""
    stored = _stored_hash(store, name)
    return None if stored is None else _stamp(stored)


def login_stamp(store: Store, name, password) -> str | None:
    """The stamp of the account ``name`` when ``password`` is its password, else None (as long to answer
    either way). The stamp is that of the very hash the password was checked against, so a password changed
    meanwhile gives a stamp that no longer stands."""
    stored = _stored_hash(store, name)
    return _stamp(stored) if verify_password(password, stored) else None


def login(store: Store, name: str, password: str) -> bool:
    """Whether ``name`` has an account here and ``password`` is its password (as long to answer either way)."""
    return login_stamp(store, name, password) is not None
