"""The database behind the tests' stores.

``MASKLOOP_TEST_DB`` picks it: ``sqlite`` (the default) puts each store's ``labels.db`` in its folder, as the
app does; ``postgresql`` gives each store a database of its own, made afresh (CREATE DATABASE) on the server
that ``MASKLOOP_TEST_POSTGRES_URL`` names and dropped when the test (or fixture) that made it ends. Media and
checkpoints stay in the store's folder either way. Tests get stores from the ``make_store`` and ``store``
fixtures (tests/conftest.py), which are built on :class:`StoreFactory`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from db.store import Settings, Store

BACKENDS = ("sqlite", "postgresql")
BACKEND = os.environ.get("MASKLOOP_TEST_DB", "sqlite")
if BACKEND not in BACKENDS:
    raise RuntimeError(f"MASKLOOP_TEST_DB must be one of {', '.join(BACKENDS)}, not {BACKEND!r}")


# Store folders that a test opens on SQLite on purpose (``backend="sqlite"``) while the rest use PostgreSQL.
EXPLICIT_SQLITE: set[Path] = set()


def postgres_server() -> str | None:
    """The URL of a database on the test server (the tests make their own databases there), or None."""
    url = os.environ.get("MASKLOOP_TEST_POSTGRES_URL")
    if not url and (BACKEND == "postgresql" or os.environ.get("MASKLOOP_REQUIRE_POSTGRES")):
        raise RuntimeError("MASKLOOP_TEST_DB=postgresql or MASKLOOP_REQUIRE_POSTGRES is set, "
                           "but MASKLOOP_TEST_POSTGRES_URL is not")
    return url


def _admin(server: str):
    return create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def create_database(migrated: bool = False) -> str:
    """A new database on the test server, empty or (``migrated``) a copy of one the migrations built (half the
    time of migrating each one); returns its URL."""
    server = postgres_server()
    if server is None:
        raise RuntimeError("set MASKLOOP_TEST_POSTGRES_URL to a PostgreSQL server for the tests")
    name = f"maskloop_test_{uuid.uuid4().hex[:16]}"
    engine = _admin(server)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{_migrated_template()}"' if migrated else "")))
    engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


@functools.cache
def _migrated_template() -> str:
    """The name of a database the migrations built, made once per process (dropped when it exits)."""
    from db.migrate import upgrade

    url = create_database()
    engine = create_engine(url, poolclass=NullPool)
    upgrade(engine)
    engine.dispose()
    atexit.register(drop_database, url)
    return make_url(url).database


def drop_database(url: str) -> None:
    """Drops a database made by :func:`create_database`, ending any connection still open to it."""
    name = make_url(url).database
    assert name and name.startswith("maskloop_test_"), name
    engine = _admin(postgres_server())
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _empty_tables(url: str) -> None:
    from db.schema import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


def cli_args(settings: Settings) -> list[str]:
    """``app.py``'s options that open this store."""
    return ["--store", str(settings.store_dir), *(["--db", settings.db_url] if settings.db_url else [])]


class StoreFactory:
    """Opens stores on the database of ``MASKLOOP_TEST_DB`` (or the ``backend`` named), each on a fresh
    database; :meth:`close` closes the stores it opened and drops the databases it made."""

    def __init__(self) -> None:
        self._stores: list[Store] = []
        self._databases: list[str] = []
        self._scratch_url: str | None = None  # the database scratch stores share (PostgreSQL)

    def settings(self, store_dir: str | Path, *, backend: str | None = None, sqlite_file: str | Path | None = None,
                 migrated: bool = False, **fields) -> Settings:
        """Settings for a new store in ``store_dir`` on an empty database, without opening it (for a child
        process or ``app.py`` to open). ``sqlite_file``: the SQLite database file, if not ``labels.db`` in
        the folder (ignored on PostgreSQL, where every store has its own database anyway). ``migrated``: on
        PostgreSQL, the database holds the current schema already (the store's migration finds nothing to do)."""
        backend = backend or BACKEND
        assert backend in BACKENDS, backend
        if backend == "postgresql":
            db_url = create_database(migrated)
            self._databases.append(db_url)
        else:
            db_url = f"sqlite:///{Path(sqlite_file).resolve()}" if sqlite_file else None
            if BACKEND != "sqlite":
                EXPLICIT_SQLITE.add(Path(store_dir).resolve())
        return Settings(store_dir=Path(store_dir), db_url=db_url, **fields)

    def __call__(self, store_dir: str | Path, *, migrate: bool = True, **kw) -> Store:
        """A new store in ``store_dir``; keywords as for :meth:`settings`, plus any field of Settings."""
        return self.open(self.settings(store_dir, migrated=migrate, **kw), migrate=migrate)

    def open(self, settings: Settings, *, migrate: bool = True) -> Store:
        """Opens (again) a store whose settings this factory made, closed with the rest."""
        st = Store(settings, migrate=migrate)
        self._stores.append(st)
        return st

    @contextlib.contextmanager
    def scratch(self, store_dir: str | Path):
        """An empty store in ``store_dir`` for one hypothesis example, gone afterwards. On SQLite a new one
        each time; on PostgreSQL every scratch store of this factory uses one database, emptied in between
        (TRUNCATE ... RESTART IDENTITY: the same empty tables and ids from 1 as a new one), because making
        and dropping a database costs more than most examples."""
        if BACKEND == "sqlite":
            st = self(store_dir)
            try:
                yield st
            finally:
                self.release(st)
            return
        if self._scratch_url is None:
            self._scratch_url = self.settings(Path(store_dir), migrated=True).db_url
        st = Store(Settings(store_dir=Path(store_dir), db_url=self._scratch_url))
        try:
            yield st
        finally:
            st.close()
            _empty_tables(self._scratch_url)

    def release(self, store: Store) -> None:
        """Closes ``store`` and drops its database now (for fixtures wider than one test)."""
        store.close()
        if store.settings.db_url in self._databases:
            self._databases.remove(store.settings.db_url)
            drop_database(store.settings.db_url)

    def close(self) -> None:
        for st in self._stores:
            st.close()
        self._stores.clear()
        for url in self._databases:
            drop_database(url)
        self._databases.clear()

