"""Participation stores: sessions, citizens, comments, reactions, flags, moderation log.

One protocol, three implementations beside the matching StateStore (memory, SQLite,
PostgreSQL), chosen by :func:`participation_store_for`. Every write is one transaction:
a flag, its counter and an automatic hide (with its log entry) land together or not at
all; so do a moderation action and its log entry.

The SQL implementations open their own connection to the StateStore's database (same
SQLite file, same PostgreSQL schema) with their own tables (``participation_*``): in
WAL mode SQLite lets two connections of one process read concurrently and serializes
their ``BEGIN IMMEDIATE`` writes with the busy timeout, so neither store ever sees the
other's half-done transaction (sharing one connection would merge them).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from twin.errors import MissingExtra, NotFound, TwinError
from twin.participation import (
    Citizen,
    Comment,
    Flag,
    FlagOutcome,
    ModerationEntry,
    Reaction,
    Session,
    after_flag,
    moderate,
)
from twin.store.base import StateStore
from twin.store.sqlite import write_tx

__all__ = [
    "MemoryParticipationStore",
    "ParticipationStore",
    "PostgresParticipationStore",
    "SqliteParticipationStore",
    "participation_store_for",
]


@runtime_checkable
class ParticipationStore(Protocol):
    """Where participation records live; every write method is one transaction."""

    def create_session(self, session: Session) -> None:
        """Insert a new session.

        Raises:
            TwinError: a session with this id exists.
        """
        ...

    def save_session(self, session: Session) -> None:
        """Replace a session (by id).

        Raises:
            NotFound: no such session.
        """
        ...

    def get_session(self, session_id: str) -> Session | None:
        """One session, or None."""
        ...

    def list_sessions(self, *, limit: int = 100) -> list[Session]:
        """Sessions, newest created first."""
        ...

    def add_citizen(self, citizen: Citizen) -> None:
        """Store a citizen (by token hash)."""
        ...

    def get_citizen(self, token_hash: str) -> Citizen | None:
        """The citizen holding the token with this hash, or None."""
        ...

    def add_comment(self, comment: Comment) -> None:
        """Insert a new comment."""
        ...

    def get_comment(self, comment_id: str) -> Comment | None:
        """One comment (any state), or None."""
        ...

    def list_comments(
        self,
        session_id: str,
        *,
        states: Sequence[str] | None = None,
        author: str | None = None,
        scenario: str | None = None,
        object_id: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[Comment]:
        """Comments of a session, oldest first.

        Args:
            session_id: the session.
            states: only comments in these states (None: every state) ...
            author: ... plus, when given, this author's comments in any of
                ``pending`` (their own queue: shown to them, not to others).
            scenario: only this scenario.
            object_id: only comments anchored to this object.
            since: only comments created after this time (epoch seconds).
            limit: at most this many.

        Returns:
            The comments, by creation time then insertion order.
        """
        ...

    def add_reaction(self, reaction: Reaction) -> tuple[bool, Comment]:
        """Add a reaction (idempotent per author and kind); return (added, comment).

        Raises:
            NotFound: no such comment.
        """
        ...

    def add_flag(self, flag: Flag, threshold: int) -> FlagOutcome:
        """Add a flag (one per author), and hide the comment when it reaches ``threshold``.

        The hide follows :func:`twin.participation.after_flag` and is logged in the same
        transaction.

        Raises:
            NotFound: no such comment.
        """
        ...

    def moderate(
        self, comment_id: str, action: str, reason: str, moderator: str, now: float
    ) -> tuple[Comment, ModerationEntry]:
        """Apply :func:`twin.participation.moderate` and log it, in one transaction.

        Raises:
            NotFound: no such comment.
            InvalidTransition: the action does not apply to the comment's state.
        """
        ...

    def moderation_log(
        self, session_id: str, *, limit: int = 100, before: float | None = None
    ) -> list[ModerationEntry]:
        """The session's moderation log, newest first."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


# --------------------------------------------------------------------------- memory


class MemoryParticipationStore:
    """Dicts; the reference semantics for the SQL stores. Not persistent."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sessions: dict[str, Session] = {}
        self._citizens: dict[str, Citizen] = {}
        self._comments: dict[str, Comment] = {}
        self._reactions: set[tuple[str, str, str]] = set()
        self._flags: dict[tuple[str, str], Flag] = {}
        self._log: list[ModerationEntry] = []

    def create_session(self, session: Session) -> None:
        with self._lock:
            if session.id in self._sessions:
                raise TwinError(f"session {session.id!r} exists")
            self._sessions[session.id] = session

    def save_session(self, session: Session) -> None:
        with self._lock:
            if session.id not in self._sessions:
                raise NotFound(f"no session {session.id!r}")
            self._sessions[session.id] = session

    def get_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def list_sessions(self, *, limit: int = 100) -> list[Session]:
        with self._lock:
            rows = list(enumerate(self._sessions.values()))
        rows.sort(key=lambda r: (-r[1].created, -r[0]))
        return [s for _, s in rows[:limit]]

    def add_citizen(self, citizen: Citizen) -> None:
        with self._lock:
            self._citizens[citizen.token_hash] = citizen

    def get_citizen(self, token_hash: str) -> Citizen | None:
        return self._citizens.get(token_hash)

    def add_comment(self, comment: Comment) -> None:
        with self._lock:
            if comment.id in self._comments:
                raise TwinError(f"comment {comment.id!r} exists")
            self._comments[comment.id] = comment

    def get_comment(self, comment_id: str) -> Comment | None:
        return self._comments.get(comment_id)

    def list_comments(
        self,
        session_id: str,
        *,
        states: Sequence[str] | None = None,
        author: str | None = None,
        scenario: str | None = None,
        object_id: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[Comment]:
        with self._lock:
            rows = list(enumerate(self._comments.values()))
        out = []
        for i, c in rows:
            if c.session_id != session_id:
                continue
            own_pending = author is not None and c.author == author and c.state == "pending"
            if states is not None and c.state not in states and not own_pending:
                continue
            if scenario is not None and c.scenario != scenario:
                continue
            if object_id is not None and c.object_id != object_id:
                continue
            if since is not None and not c.created > since:
                continue
            out.append((c.created, i, c))
        out.sort(key=lambda r: (r[0], r[1]))
        return [c for _, _, c in out[:limit]]

    def add_reaction(self, reaction: Reaction) -> tuple[bool, Comment]:
        with self._lock:
            c = self._comments.get(reaction.comment_id)
            if c is None:
                raise NotFound(f"no comment {reaction.comment_id!r}")
            key = (reaction.comment_id, reaction.author, reaction.kind)
            if key in self._reactions:
                return False, c
            self._reactions.add(key)
            c = self._comments[c.id] = replace(c, reactions=c.reactions + 1)
            return True, c

    def add_flag(self, flag: Flag, threshold: int) -> FlagOutcome:
        with self._lock:
            c = self._comments.get(flag.comment_id)
            if c is None:
                raise NotFound(f"no comment {flag.comment_id!r}")
            key = (flag.comment_id, flag.author)
            if key in self._flags:
                return FlagOutcome(False, c)
            counted = replace(c, flags=c.flags + 1)
            new, entry = after_flag(counted, threshold, flag.time)
            # Built first, then written: nothing lands if anything above raised.
            self._flags[key] = flag
            self._comments[c.id] = new
            if entry is not None:
                self._log.append(entry)
            return FlagOutcome(True, new, entry)

    def moderate(
        self, comment_id: str, action: str, reason: str, moderator: str, now: float
    ) -> tuple[Comment, ModerationEntry]:
        with self._lock:
            c = self._comments.get(comment_id)
            if c is None:
                raise NotFound(f"no comment {comment_id!r}")
            new, entry = moderate(c, action, reason, moderator, now)
            self._comments[c.id] = new
            self._log.append(entry)
            return new, entry

    def moderation_log(
        self, session_id: str, *, limit: int = 100, before: float | None = None
    ) -> list[ModerationEntry]:
        with self._lock:
            rows = [
                (i, e)
                for i, e in enumerate(self._log)
                if e.session_id == session_id and (before is None or e.time < before)
            ]
        rows.sort(key=lambda r: (-r[1].time, -r[0]))
        return [e for _, e in rows[:limit]]

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------- SQL shared

_COMMENT_COLUMNS = (
    "id, session_id, author, scenario, state, created, updated, parent_id, reactions, "
    "flags, reviewed, body"
)


def _comment(row: Sequence[Any]) -> Comment:
    cid, sid, author, scenario, state, created, updated, parent, reac, flags, rev, body = row
    return Comment.from_row(
        id=cid,
        session_id=sid,
        author=author,
        scenario=scenario,
        state=state,
        created=created,
        updated=updated,
        parent_id=parent,
        reactions=reac,
        flags=flags,
        reviewed=bool(rev),
        body=orjson.loads(body),
    )


def _comment_params(c: Comment) -> tuple[Any, ...]:
    return (
        c.id,
        c.session_id,
        c.author,
        c.scenario,
        c.state,
        c.created,
        c.updated,
        c.parent_id,
        c.reactions,
        c.flags,
        c.reviewed,
        c.object_id,
        orjson.dumps(c.body()).decode(),
    )


def _entry_params(e: ModerationEntry) -> tuple[Any, ...]:
    return (e.session_id, e.comment_id, e.action, e.reason, e.moderator, e.time, e.state)


_ENTRY_COLUMNS = "session_id, comment_id, action, reason, moderator, t, state"


def _comment_filter(
    ph: str,
    session_id: str,
    states: Sequence[str] | None,
    author: str | None,
    scenario: str | None,
    object_id: str | None,
    since: float | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause of :meth:`ParticipationStore.list_comments` (placeholder ``ph``)."""
    where = [f"session_id = {ph}"]
    params: list[Any] = [session_id]
    if states is not None:
        cond = f"state IN ({', '.join([ph] * len(states))})" if states else "false"
        params.extend(states)
        if author is not None:
            cond = f"({cond} OR (author = {ph} AND state = 'pending'))"
            params.append(author)
        where.append(cond)
    for col, value in (("scenario", scenario), ("object_id", object_id)):
        if value is not None:
            where.append(f"{col} = {ph}")
            params.append(value)
    if since is not None:
        where.append(f"created > {ph}")
        params.append(since)
    return " AND ".join(where), params


# --------------------------------------------------------------------------- SQLite

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS participation_sessions (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS participation_citizens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    pseudonym TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS participation_comments (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    author TEXT NOT NULL,
    scenario TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    parent_id TEXT,
    reactions INTEGER NOT NULL DEFAULT 0,
    flags INTEGER NOT NULL DEFAULT 0,
    reviewed INTEGER NOT NULL DEFAULT 0,
    object_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS participation_comments_session
    ON participation_comments (session_id, created, seq);
CREATE INDEX IF NOT EXISTS participation_comments_object
    ON participation_comments (session_id, object_id);
CREATE TABLE IF NOT EXISTS participation_reactions (
    comment_id TEXT NOT NULL,
    author TEXT NOT NULL,
    kind TEXT NOT NULL,
    t REAL NOT NULL,
    PRIMARY KEY (comment_id, author, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS participation_flags (
    comment_id TEXT NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    t REAL NOT NULL,
    PRIMARY KEY (comment_id, author)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS participation_moderation (
    seq INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    comment_id TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    moderator TEXT NOT NULL,
    t REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS participation_moderation_session
    ON participation_moderation (session_id, t, seq);
"""

_INSERT_COMMENT = (
    "INSERT INTO participation_comments (id, session_id, author, scenario, state, created, "
    "updated, parent_id, reactions, flags, reviewed, object_id, body) VALUES "
)
_UPDATE_COMMENT_STATE = (
    "UPDATE participation_comments SET state = {ph}, updated = {ph}, reviewed = {ph}, "
    "flags = {ph}, reactions = {ph} WHERE id = {ph}"
)


class SqliteParticipationStore:
    """Participation tables in the SQLite file of a :class:`twin.store.sqlite.SqliteStore`.

    Its own connection (WAL mode, ``BEGIN IMMEDIATE`` writes); ``sqlite:///:memory:``
    gets a private in-memory database (the tables never join the state tables).
    """

    def __init__(self, url: str) -> None:
        """Open the file named by a ``sqlite:///`` URL and create the tables (idempotent).

        Raises:
            TwinError: the file cannot be opened.
        """
        from twin.store.sqlite import _path_from_url

        self.url = url
        path = _path_from_url(url)
        if path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise TwinError(f"cannot open store {url!r}: folder {parent} does not exist")
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            if path != ":memory:":
                # The SqliteStore's checkpoint thread folds the WAL in (for both
                # connections): a commit here never waits for a checkpoint either.
                self._db.execute("PRAGMA wal_autocheckpoint=0")
            # Each CREATE ... IF NOT EXISTS commits on its own: idempotent, and safe
            # with another process creating the same tables (busy timeout).
            self._db.executescript(_SQLITE_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise TwinError(f"cannot open participation tables in {url!r}: {exc}") from None
        self._lock = threading.RLock()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_tx(self._db, self._lock, self.url)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise TwinError(f"store {self.url!r}: read failed ({exc})") from None

    def create_session(self, session: Session) -> None:
        with self._tx() as db:
            try:
                db.execute(
                    "INSERT INTO participation_sessions (id, seq, created, doc) VALUES "
                    "(?, (SELECT COALESCE(max(seq), 0) + 1 FROM participation_sessions), ?, ?)",
                    (session.id, session.created, orjson.dumps(session.as_dict()).decode()),
                )
            except sqlite3.IntegrityError:
                raise TwinError(f"session {session.id!r} exists") from None

    def save_session(self, session: Session) -> None:
        with self._tx() as db:
            n = db.execute(
                "UPDATE participation_sessions SET doc = ? WHERE id = ?",
                (orjson.dumps(session.as_dict()).decode(), session.id),
            ).rowcount
            if n == 0:
                raise NotFound(f"no session {session.id!r}")

    def get_session(self, session_id: str) -> Session | None:
        rows = self._read("SELECT doc FROM participation_sessions WHERE id = ?", (session_id,))
        return Session.from_dict(orjson.loads(rows[0][0])) if rows else None

    def list_sessions(self, *, limit: int = 100) -> list[Session]:
        rows = self._read(
            "SELECT doc FROM participation_sessions ORDER BY created DESC, seq DESC LIMIT ?",
            (limit,),
        )
        return [Session.from_dict(orjson.loads(r[0])) for r in rows]

    def add_citizen(self, citizen: Citizen) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO participation_citizens "
                "(token_hash, session_id, pseudonym, created) VALUES (?, ?, ?, ?)",
                (citizen.token_hash, citizen.session_id, citizen.pseudonym, citizen.created),
            )

    def get_citizen(self, token_hash: str) -> Citizen | None:
        rows = self._read(
            "SELECT token_hash, session_id, pseudonym, created FROM participation_citizens "
            "WHERE token_hash = ?",
            (token_hash,),
        )
        return Citizen(*rows[0]) if rows else None

    def add_comment(self, comment: Comment) -> None:
        with self._tx() as db:
            db.execute(
                _INSERT_COMMENT + "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _comment_params(comment),
            )

    def _get(self, db: sqlite3.Connection, comment_id: str) -> Comment | None:
        row = db.execute(
            f"SELECT {_COMMENT_COLUMNS} FROM participation_comments WHERE id = ?", (comment_id,)
        ).fetchone()
        return _comment(row) if row else None

    def get_comment(self, comment_id: str) -> Comment | None:
        with self._lock:
            return self._get(self._db, comment_id)

    def list_comments(
        self,
        session_id: str,
        *,
        states: Sequence[str] | None = None,
        author: str | None = None,
        scenario: str | None = None,
        object_id: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[Comment]:
        where, params = _comment_filter("?", session_id, states, author, scenario, object_id, since)
        rows = self._read(
            f"SELECT {_COMMENT_COLUMNS} FROM participation_comments WHERE {where} "
            "ORDER BY created, seq LIMIT ?",
            (*params, limit),
        )
        return [_comment(r) for r in rows]

    def _update(self, db: sqlite3.Connection, c: Comment) -> None:
        db.execute(
            _UPDATE_COMMENT_STATE.format(ph="?"),
            (c.state, c.updated, c.reviewed, c.flags, c.reactions, c.id),
        )

    def add_reaction(self, reaction: Reaction) -> tuple[bool, Comment]:
        with self._tx() as db:
            c = self._get(db, reaction.comment_id)
            if c is None:
                raise NotFound(f"no comment {reaction.comment_id!r}")
            n = db.execute(
                "INSERT OR IGNORE INTO participation_reactions (comment_id, author, kind, t) "
                "VALUES (?, ?, ?, ?)",
                (reaction.comment_id, reaction.author, reaction.kind, reaction.time),
            ).rowcount
            if n == 0:
                return False, c
            c = replace(c, reactions=c.reactions + 1)
            self._update(db, c)
            return True, c

    def add_flag(self, flag: Flag, threshold: int) -> FlagOutcome:
        with self._tx() as db:
            c = self._get(db, flag.comment_id)
            if c is None:
                raise NotFound(f"no comment {flag.comment_id!r}")
            n = db.execute(
                "INSERT OR IGNORE INTO participation_flags (comment_id, author, reason, t) "
                "VALUES (?, ?, ?, ?)",
                (flag.comment_id, flag.author, flag.reason, flag.time),
            ).rowcount
            if n == 0:
                return FlagOutcome(False, c)
            new, entry = after_flag(replace(c, flags=c.flags + 1), threshold, flag.time)
            self._update(db, new)
            if entry is not None:
                db.execute(
                    f"INSERT INTO participation_moderation ({_ENTRY_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    _entry_params(entry),
                )
            return FlagOutcome(True, new, entry)

    def moderate(
        self, comment_id: str, action: str, reason: str, moderator: str, now: float
    ) -> tuple[Comment, ModerationEntry]:
        with self._tx() as db:
            c = self._get(db, comment_id)
            if c is None:
                raise NotFound(f"no comment {comment_id!r}")
            new, entry = moderate(c, action, reason, moderator, now)
            self._update(db, new)
            db.execute(
                f"INSERT INTO participation_moderation ({_ENTRY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                _entry_params(entry),
            )
            return new, entry

    def moderation_log(
        self, session_id: str, *, limit: int = 100, before: float | None = None
    ) -> list[ModerationEntry]:
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM participation_moderation WHERE session_id = ? "
            "AND t < ? ORDER BY t DESC, seq DESC LIMIT ?",
            (session_id, float("inf") if before is None else before, limit),
        )
        return [ModerationEntry(*r) for r in rows]

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()


# --------------------------------------------------------------------------- PostgreSQL

_PG_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.participation_sessions (
    id text PRIMARY KEY,
    seq bigserial,
    created double precision NOT NULL,
    doc text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.participation_citizens (
    token_hash text PRIMARY KEY,
    session_id text NOT NULL,
    pseudonym text NOT NULL,
    created double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.participation_comments (
    seq bigserial,
    id text PRIMARY KEY,
    session_id text NOT NULL,
    author text NOT NULL,
    scenario text NOT NULL,
    state text NOT NULL,
    created double precision NOT NULL,
    updated double precision NOT NULL,
    parent_id text,
    reactions integer NOT NULL DEFAULT 0,
    flags integer NOT NULL DEFAULT 0,
    reviewed boolean NOT NULL DEFAULT false,
    object_id text,
    body text NOT NULL
);
CREATE INDEX IF NOT EXISTS participation_comments_session
    ON {s}.participation_comments (session_id, created, seq);
CREATE INDEX IF NOT EXISTS participation_comments_object
    ON {s}.participation_comments (session_id, object_id);
CREATE TABLE IF NOT EXISTS {s}.participation_reactions (
    comment_id text NOT NULL,
    author text NOT NULL,
    kind text NOT NULL,
    t double precision NOT NULL,
    PRIMARY KEY (comment_id, author, kind)
);
CREATE TABLE IF NOT EXISTS {s}.participation_flags (
    comment_id text NOT NULL,
    author text NOT NULL,
    reason text NOT NULL,
    t double precision NOT NULL,
    PRIMARY KEY (comment_id, author)
);
CREATE TABLE IF NOT EXISTS {s}.participation_moderation (
    seq bigserial PRIMARY KEY,
    session_id text NOT NULL,
    comment_id text NOT NULL,
    action text NOT NULL,
    reason text NOT NULL,
    moderator text NOT NULL,
    t double precision NOT NULL,
    state text NOT NULL
);
CREATE INDEX IF NOT EXISTS participation_moderation_session
    ON {s}.participation_moderation (session_id, t, seq);
"""


class PostgresParticipationStore:
    """Participation tables in the schema of a :class:`twin.store.postgres.PostgresStore`.

    Its own connection (autocommit, explicit transactions), guarded by a lock and
    reopened when broken, as the PostgresStore does. Writes that read a comment first
    lock its row (``SELECT ... FOR UPDATE``), so concurrent flags count exactly.
    """

    def __init__(self, url: str) -> None:
        """Connect and create the tables (idempotent).

        Raises:
            MissingExtra: psycopg is not installed.
            TwinError: bad URL or unreachable server.
        """
        from twin.store import postgres as pg

        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the environment
            raise MissingExtra("psycopg", "postgres") from None
        self.url = url
        self._conninfo, self.schema, self._safe_url = pg._split_url(url)
        self._s = f'"{self.schema}"'
        self._lock = threading.RLock()
        self._conn: Any = None
        with self._tx("creating the participation tables") as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (pg._INIT_LOCK,))
            cur.execute(_PG_SCHEMA.format(s=self._s))

    def _connection(self) -> Any:
        import psycopg

        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None and not conn.closed:
                conn.close()
            try:
                conn = self._conn = psycopg.connect(self._conninfo, autocommit=True)
                conn.execute("SET client_min_messages TO warning")
            except psycopg.Error as exc:
                reason = " ".join(str(exc).split())
                raise TwinError(
                    f"cannot connect to PostgreSQL at {self._safe_url}: {reason}"
                ) from None
        return conn

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[Any]:
        import psycopg

        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise TwinError(
                    f"PostgreSQL error while {what}: {' '.join(str(exc).split())}"
                ) from exc

    def _read(self, sql: str, params: Sequence[Any] = (), what: str = "reading") -> list[Any]:
        import psycopg

        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                    rows: list[Any] = cur.fetchall()
                    return rows
            except psycopg.Error as exc:
                raise TwinError(
                    f"PostgreSQL error while {what}: {' '.join(str(exc).split())}"
                ) from exc

    def create_session(self, session: Session) -> None:
        with self._tx("creating a session") as cur:
            cur.execute(
                f"INSERT INTO {self._s}.participation_sessions (id, created, doc) "
                "VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (session.id, session.created, orjson.dumps(session.as_dict()).decode()),
            )
            if cur.rowcount == 0:
                raise TwinError(f"session {session.id!r} exists")

    def save_session(self, session: Session) -> None:
        with self._tx("saving a session") as cur:
            cur.execute(
                f"UPDATE {self._s}.participation_sessions SET doc = %s WHERE id = %s",
                (orjson.dumps(session.as_dict()).decode(), session.id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no session {session.id!r}")

    def get_session(self, session_id: str) -> Session | None:
        rows = self._read(
            f"SELECT doc FROM {self._s}.participation_sessions WHERE id = %s", (session_id,)
        )
        return Session.from_dict(orjson.loads(rows[0][0])) if rows else None

    def list_sessions(self, *, limit: int = 100) -> list[Session]:
        rows = self._read(
            f"SELECT doc FROM {self._s}.participation_sessions "
            "ORDER BY created DESC, seq DESC LIMIT %s",
            (limit,),
        )
        return [Session.from_dict(orjson.loads(r[0])) for r in rows]

    def add_citizen(self, citizen: Citizen) -> None:
        with self._tx("storing a citizen") as cur:
            cur.execute(
                f"INSERT INTO {self._s}.participation_citizens "
                "(token_hash, session_id, pseudonym, created) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (token_hash) DO NOTHING",
                (citizen.token_hash, citizen.session_id, citizen.pseudonym, citizen.created),
            )

    def get_citizen(self, token_hash: str) -> Citizen | None:
        rows = self._read(
            "SELECT token_hash, session_id, pseudonym, created "
            f"FROM {self._s}.participation_citizens WHERE token_hash = %s",
            (token_hash,),
        )
        return Citizen(*rows[0]) if rows else None

    def add_comment(self, comment: Comment) -> None:
        with self._tx("storing a comment") as cur:
            cur.execute(
                _INSERT_COMMENT.replace("INTO ", f"INTO {self._s}.")
                + "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _comment_params(comment),
            )

    def _get(self, cur: Any, comment_id: str, lock: bool) -> Comment | None:
        cur.execute(
            f"SELECT {_COMMENT_COLUMNS} FROM {self._s}.participation_comments WHERE id = %s"
            + (" FOR UPDATE" if lock else ""),
            (comment_id,),
        )
        row = cur.fetchone()
        return _comment(row) if row else None

    def get_comment(self, comment_id: str) -> Comment | None:
        rows = self._read(
            f"SELECT {_COMMENT_COLUMNS} FROM {self._s}.participation_comments WHERE id = %s",
            (comment_id,),
        )
        return _comment(rows[0]) if rows else None

    def list_comments(
        self,
        session_id: str,
        *,
        states: Sequence[str] | None = None,
        author: str | None = None,
        scenario: str | None = None,
        object_id: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[Comment]:
        where, params = _comment_filter(
            "%s", session_id, states, author, scenario, object_id, since
        )
        rows = self._read(
            f"SELECT {_COMMENT_COLUMNS} FROM {self._s}.participation_comments WHERE {where} "
            "ORDER BY created, seq LIMIT %s",
            (*params, limit),
        )
        return [_comment(r) for r in rows]

    def _update(self, cur: Any, c: Comment) -> None:
        cur.execute(
            _UPDATE_COMMENT_STATE.format(ph="%s").replace("UPDATE ", f"UPDATE {self._s}.", 1),
            (c.state, c.updated, c.reviewed, c.flags, c.reactions, c.id),
        )

    def add_reaction(self, reaction: Reaction) -> tuple[bool, Comment]:
        with self._tx("adding a reaction") as cur:
            c = self._get(cur, reaction.comment_id, lock=True)
            if c is None:
                raise NotFound(f"no comment {reaction.comment_id!r}")
            cur.execute(
                f"INSERT INTO {self._s}.participation_reactions (comment_id, author, kind, t) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (reaction.comment_id, reaction.author, reaction.kind, reaction.time),
            )
            if cur.rowcount == 0:
                return False, c
            c = replace(c, reactions=c.reactions + 1)
            self._update(cur, c)
            return True, c

    def add_flag(self, flag: Flag, threshold: int) -> FlagOutcome:
        with self._tx("adding a flag") as cur:
            c = self._get(cur, flag.comment_id, lock=True)
            if c is None:
                raise NotFound(f"no comment {flag.comment_id!r}")
            cur.execute(
                f"INSERT INTO {self._s}.participation_flags (comment_id, author, reason, t) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (flag.comment_id, flag.author, flag.reason, flag.time),
            )
            if cur.rowcount == 0:
                return FlagOutcome(False, c)
            new, entry = after_flag(replace(c, flags=c.flags + 1), threshold, flag.time)
            self._update(cur, new)
            if entry is not None:
                cur.execute(
                    f"INSERT INTO {self._s}.participation_moderation ({_ENTRY_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    _entry_params(entry),
                )
            return FlagOutcome(True, new, entry)

    def moderate(
        self, comment_id: str, action: str, reason: str, moderator: str, now: float
    ) -> tuple[Comment, ModerationEntry]:
        with self._tx("moderating a comment") as cur:
            c = self._get(cur, comment_id, lock=True)
            if c is None:
                raise NotFound(f"no comment {comment_id!r}")
            new, entry = moderate(c, action, reason, moderator, now)
            self._update(cur, new)
            cur.execute(
                f"INSERT INTO {self._s}.participation_moderation ({_ENTRY_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                _entry_params(entry),
            )
            return new, entry

    def moderation_log(
        self, session_id: str, *, limit: int = 100, before: float | None = None
    ) -> list[ModerationEntry]:
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM {self._s}.participation_moderation "
            "WHERE session_id = %s AND t < %s ORDER BY t DESC, seq DESC LIMIT %s",
            (session_id, float("inf") if before is None else before, limit),
        )
        return [ModerationEntry(*r) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()


# --------------------------------------------------------------------------- factory


def participation_store_for(store: StateStore) -> ParticipationStore:
    """The participation store matching a StateStore (same database, own tables).

    Raises:
        TwinError: a StateStore of a kind without a participation store, or the
            participation tables cannot be opened.
    """
    from twin.store.memory import MemoryStore
    from twin.store.postgres import PostgresStore
    from twin.store.sqlite import SqliteStore

    if isinstance(store, MemoryStore):
        return MemoryParticipationStore()
    if isinstance(store, SqliteStore):
        return SqliteParticipationStore(store.url)
    if isinstance(store, PostgresStore):
        return PostgresParticipationStore(store.url)
    raise TwinError(f"no participation store for {type(store).__name__} ({store.url!r})")
