"""Opening a store: one folder with ``labels.db`` (SQLite) and ``media/``, or a database URL.

The caller owns session lifetimes: ``with store.session() as s, s.begin(): ...``.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every tunable of the application, passed down explicitly."""

    store_dir: Path = Path("labelstore")
    db_url: str | None = None  # None: SQLite file inside store_dir
    max_pixels: int = 120_000_000  # images above this are refused at ingest
    # Shapes refused at ingest (db.media.shape_problem), measured in docs/reliability.md ("Odd shapes"): a side
    # under min_side pixels is nothing to label; beyond max_aspect:1 the tiny model's resize leaves a short side
    # of under 9 px (0 px, and a crash, past 192:1) and a fitted canvas shows a sliver; a side over max_side
    # cannot be a browser canvas (Firefox's limit; Chrome's is 65535), and a mask crop is drawn on one.
    min_side: int = 8
    max_aspect: float = 20.0
    max_side: int = 32_767
    max_image_bytes: int = 512 * 2 ** 20  # an image file (or zip entry) larger than this is refused unread
    max_zip_ratio: int = 200  # a zip entry expanding more than this is refused unread (a zip bomb)
    # what the archives of one COCO upload (its images, unpacked to a temporary folder) may unpack in all;
    # past it the upload is refused whole before writing (db.ingest.Unpacker)
    max_unpacked_bytes: int = 2 ** 30
    busy_timeout_ms: int = 30_000
    user: str = "local"

    @property
    def media_dir(self) -> Path:
        return Path(self.store_dir) / "media"

    @property
    def models_dir(self) -> Path:
        return Path(self.store_dir) / "models"

    @property
    def url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(Path(self.store_dir) / 'labels.db').resolve()}"

    def absolute(self) -> "Settings":
        """These settings with the store folder, and a SQLite database file given by a relative path, made
        absolute against the working folder: what a process started in another folder needs to open this
        same store (a relative path would name another one there)."""
        return dataclasses.replace(self, store_dir=Path(self.store_dir).resolve(), db_url=absolute_db_url(self.db_url))


def sqlite_file(db_url: str) -> Path | None:
    """The database file a SQLite URL names, as written (relative or absolute); None for any other URL (a
    server's, an in-memory or a ``uri=true`` SQLite one)."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or url.query.get("uri"):
        return None
    return Path(url.database)


def absolute_db_url(db_url: str | None) -> str | None:
    """``db_url`` with a SQLite file's relative path made absolute against the working folder; any other URL
    (and None) unchanged."""
    path = sqlite_file(db_url) if db_url else None
    if path is None or path.is_absolute():
        return db_url
    return make_url(db_url).set(database=str(path.resolve())).render_as_string(hide_password=False)


def _sqlite_pragmas(busy_timeout_ms: int):
    def on_connect(dbapi_conn, _record):
        # Let SQLAlchemy manage transactions explicitly (BEGIN issued by the 'begin' hook below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return on_connect


def _strict_json(value) -> str:
    """JSON columns never hold NaN or Infinity: the json module would write them, and every later export
    (or any other strict reader) would then fail. A ValueError here aborts the write."""
    return json.dumps(value, allow_nan=False)


def make_engine(settings: Settings) -> Engine:
    url = settings.url
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, json_serializer=_strict_json)
        event.listen(engine, "connect", _sqlite_pragmas(settings.busy_timeout_ms))

        @event.listens_for(engine, "begin")
        def _begin(conn):  # a real BEGIN, so transactions are atomic in pysqlite
            # Writing transactions take the write lock at BEGIN (waiting up to busy_timeout): a deferred
            # transaction that reads first and then writes fails at once with "database is locked" when
            # another writer got in between, since SQLite cannot wait for a snapshot to become current.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=_strict_json)


class Store:
    """A database engine plus the folder for media and checkpoints."""

    def __init__(self, settings: Settings, *, migrate: bool = True):
        self.settings = settings
        self.closed = False
        Path(settings.store_dir).mkdir(parents=True, exist_ok=True)
        settings.media_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            from db.migrate import upgrade

            upgrade(self.engine)

    @classmethod
    def open(cls, store_dir: str | Path = "labelstore", db_url: str | None = None, **kw) -> "Store":
        return cls(Settings(store_dir=Path(store_dir), db_url=db_url, **kw))

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A short writing transaction: commits on success, rolls back on any error. On SQLite it holds the
        write lock from its start, so reads inside it see what it will write over."""
        with self._sessions() as s, s.begin():
            s.connection(execution_options={"write": True})
            yield s

    def media_file(self, media_path: str) -> Path:
        return self.settings.media_dir / media_path

    def close(self) -> None:
        """Close the database connections; threads that poll the store (annotator.follow) stop at their next
        look."""
        self.closed = True
        self.engine.dispose()
