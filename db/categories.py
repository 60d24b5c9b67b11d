"""Category management: add, rename, keypoint names and skeleton, delete (never while in use)."""

from __future__ import annotations

from sqlalchemy import case, func, null, select, update

from db.errors import UserError
from db.ids import advance_sequences, id_problem
from db.schema import Annotation, Category, Image, text_problem, unicode_problem
from db.store import Store


def all_categories(store: Store) -> list[Category]:
    """Every category by id (detached rows)."""
    with store.session() as s:
        return list(s.scalars(select(Category).order_by(Category.id)))


def parse_keypoints(text: str) -> list[str]:
    names = [n.strip() for n in (text or "").replace("\n", ",").split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise UserError("keypoint names must be unique")
    return names


def parse_skeleton(text: str, n_keypoints: int) -> list[list[int]]:
    """'1-2, 2-3' -> [[1, 2], [2, 3]] (1-based, as in COCO)."""
    pairs = []
    for part in (text or "").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        a, sep, b = part.partition("-")
        if not sep or not a.strip().isdigit() or not b.strip().isdigit():
            raise UserError(f"skeleton pair {part!r}: write pairs of 1-based keypoint numbers like 1-2")
        pa, pb = int(a), int(b)
        if not (1 <= pa <= n_keypoints and 1 <= pb <= n_keypoints):
            raise UserError(f"skeleton pair {part!r}: keypoint numbers go from 1 to {n_keypoints}")
        pairs.append([pa, pb])
    return pairs


def add(store: Store, name: str, supercategory: str = "", keypoints: list[str] | None = None,
        skeleton: list[list[int]] | None = None, category_id: int | None = None) -> int:
    name = (name or "").strip()
    if not name:
        raise UserError("a category needs a name")
    _check_texts(name, supercategory, keypoints)
    with store.transaction() as s:
        if s.scalar(select(Category.id).where(Category.name == name)) is not None:
            raise UserError(f"a category named '{name}' exists already")
        if category_id is not None:
            if id_problem(category_id):
                raise UserError(f"category id: {id_problem(category_id)}")
            if s.get(Category, category_id) is not None:
                raise UserError(f"category id {category_id} is taken")
        cat = Category(id=category_id, name=name, supercategory=supercategory or "",
                       keypoints=keypoints or None, skeleton=skeleton if keypoints else None)
        s.add(cat)
        s.flush()  # the database allocates the id when none was given
        if category_id is not None:
            advance_sequences(s, "categories")
        return cat.id


def update_category(store: Store, category_id: int, *, name: str | None = None, supercategory: str | None = None,
                    keypoints: list[str] | None = None, skeleton: list[list[int]] | None = None) -> None:
    """Change a category. Its keypoint names may be renamed at any time, but added or removed only while no
    annotation holds a keypoint list (an empty list or JSON null holds none: those are cleared). The row is
    locked first (FOR UPDATE on PostgreSQL), so a save of keypoints on it (db.annotations.save_review, which
    checks them against the list as it is then) lands wholly before or after the change."""
    _check_texts(name, supercategory, keypoints)
    with store.transaction() as s:
        c = s.get(Category, category_id, with_for_update=True)
        if c is None:
            raise UserError(f"no category with id {category_id}")
        if name is not None and name.strip() and name.strip() != c.name:
            if s.scalar(select(Category.id).where(Category.name == name.strip())) is not None:
                raise UserError(f"a category named '{name.strip()}' exists already")
            c.name = name.strip()
        if supercategory is not None:
            c.supercategory = supercategory
        if keypoints is not None:
            if keypoints != list(c.keypoints or []):
                used = s.scalar(select(func.count()).select_from(Annotation).where(
                    Annotation.category_id == category_id, holds_keypoints(s)))
                if used and len(keypoints) != len(c.keypoints or []):
                    raise UserError(f"{used} annotation(s) of '{c.name}' hold keypoints in the current order (a "
                                    f"list of {len(c.keypoints or [])}); rename keypoints, but do not add or remove "
                                    f"them while labels use them (this list has {len(keypoints)})")
                if not used:  # what remains are empty lists and JSON nulls, which would not fit the new list
                    s.execute(update(Annotation).where(Annotation.category_id == category_id,
                                                       Annotation.keypoints.is_not(None))
                              .values(keypoints=null(), num_keypoints=None))
            c.keypoints = keypoints or None
            if skeleton is None:  # pairs past the new list would make an export that does not import again
                c.skeleton = [p for p in (c.skeleton or []) if max(p) <= len(keypoints)] or None
        if skeleton is not None:
            c.skeleton = skeleton if c.keypoints else None


def holds_keypoints(s):
    """An SQL condition: the annotation's keypoints column holds a list of at least one keypoint (not SQL
    NULL, not JSON null, not an empty list), the same on SQLite and PostgreSQL."""
    column = Annotation.keypoints
    if s.get_bind().dialect.name == "sqlite":
        return func.json_array_length(column) > 0  # (0 for JSON null and every other non-list)
    return case((func.json_typeof(column) == "array", func.json_array_length(column)), else_=0) > 0


def _check_texts(name: str | None, supercategory: str | None, keypoints: list[str] | None) -> None:
    """The store's limits for a category's texts (db.schema.text_problem), named, before anything is written."""
    for field, column, value in (("name", Category.name, (name or "").strip()),
                                 ("supercategory", Category.supercategory, supercategory or "")):
        if text_problem(column, value):
            raise UserError(f"category {field} {value[:60]!r} {text_problem(column, value)}")
    for k in keypoints or []:
        if unicode_problem(k):
            raise UserError(f"keypoint name {k[:60]!r} {unicode_problem(k)}")


def delete(store: Store, category_id: int, *, move_to: int | None = None, delete_annotations: bool = False) -> int:
    """Delete a category. One that annotations use is refused unless they are moved or deleted."""
    with store.transaction() as s:
        c = s.get(Category, category_id)
        if c is None:
            raise UserError(f"no category with id {category_id}")
        used = s.scalar(select(func.count()).select_from(Annotation).where(Annotation.category_id == category_id))
        if used and (move_to is not None or delete_annotations):  # their images' labels change: move the lock on
            s.execute(update(Image).where(Image.id.in_(select(Annotation.image_id)
                                                       .where(Annotation.category_id == category_id)))
                      .values(row_version=Image.row_version + 1))
        if used:
            if move_to is not None:
                target = s.get(Category, move_to)
                if target is None or move_to == category_id:
                    raise UserError(f"cannot move to category {move_to}: no such other category")
                if (target.keypoints or []) != (c.keypoints or []):
                    s.execute(update(Annotation).where(Annotation.category_id == category_id)
                              .values(keypoints=None, num_keypoints=None))
                s.execute(update(Annotation).where(Annotation.category_id == category_id).values(category_id=move_to))
            elif delete_annotations:
                s.query(Annotation).filter(Annotation.category_id == category_id).delete()
            else:
                raise UserError(f"category '{c.name}' is used by {used} annotation(s): move them to another "
                                "category or delete them first")
        s.delete(c)
    return used or 0
