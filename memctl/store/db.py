"""Open the SQLCipher database with the settings memctl's format requires.

Every connection: raw 256-bit key (SQLCipher's own KDF skipped), ``cipher_compatibility = 4``
with the vault's page layout (:data:`CIPHER`), WAL, ``secure_delete`` on (asserted: erasure
depends on it), a busy timeout so processes can share the vault, foreign keys on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from memctl.errors import CorruptVault, NoSpace, VaultBusy

BUSY_TIMEOUT_MS = 30_000

#: The page layout of vaults made now, recorded in the header (``cipher``): 16 KiB pages with
#: an HMAC-SHA256 tag. SQLCipher's work is per page (an AES-CBC pass and an HMAC), and VACUUM,
#: which erasure needs, decrypts and re-encrypts every page: on the 100k bench vault's 111 MB
#: keyword database, 1.43-1.50 s against 2.23-2.50 s with SQLCipher 4's 4 KiB / HMAC-SHA512
#: (docs/benchmarks.md). A header without ``cipher`` means those defaults (older vaults).
CIPHER: dict[str, Any] | None = {"page_size": 16384, "hmac": "HMAC_SHA256"}
_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)
_HMACS = ("HMAC_SHA1", "HMAC_SHA256", "HMAC_SHA512")


def new_vault_cipher() -> dict[str, Any] | None:
    """The ``cipher`` entry of a vault made now (None: SQLCipher 4's layout)."""
    return dict(CIPHER) if CIPHER is not None else None


def check_cipher(cipher: Any) -> dict[str, Any] | None:
    """A header's ``cipher`` entry, validated (CorruptVault otherwise); None: SQLCipher 4's."""
    if cipher is None:
        return None
    if (
        not isinstance(cipher, dict)
        or set(cipher) != {"page_size", "hmac"}
        or cipher["page_size"] not in _PAGE_SIZES
        or cipher["hmac"] not in _HMACS
    ):
        raise CorruptVault("header.json: malformed cipher entry")
    return dict(cipher)


def _sqlcipher() -> Any:
    import sqlcipher3

    return sqlcipher3


def db_errors() -> tuple[type[BaseException], ...]:
    mod = _sqlcipher()
    return (mod.DatabaseError,)


_CONNECTION: Any = None


def _connection_class() -> Any:
    """sqlcipher3's connection with room for memctl's per-connection state
    (:mod:`memctl.recall.rank`): ``term_stats``, and ``has_rank`` once ``memctl_bm25`` is
    loaded."""
    global _CONNECTION
    if _CONNECTION is None:

        class Connection(_sqlcipher().Connection):  # type: ignore[misc, name-defined]
            term_stats: Any = None
            has_rank = False

        _CONNECTION = Connection
    return _CONNECTION


def connect(
    path: Path,
    key: bytes,
    *,
    cipher: dict[str, Any] | None = None,
    create: bool = False,
    readonly: bool = False,
) -> Any:
    """Open (or create) ``index.db`` and prove the key works. Raises memctl errors.

    ``cipher``: the vault's page layout (:data:`CIPHER`, from its header); None for SQLCipher
    4's defaults. It must be the one the file was made with: any other fails like a wrong key.
    """
    cipher = check_cipher(cipher)
    from memctl.recall import rank

    sq = _sqlcipher()
    if not create and not path.exists():
        raise CorruptVault(f"{path.name}: missing from the vault")
    if create:
        # Create with owner-only permissions before SQLite touches it.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    uri = path.resolve().as_uri() + ("?mode=ro" if readonly else "")
    try:
        conn = sq.connect(
            uri,
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            factory=_connection_class(),
        )
    except sq.Error as exc:
        raise CorruptVault(f"{path.name}: cannot open ({exc})") from None
    try:
        # SQLCipher logs decryption failures to stderr by default; we report them ourselves.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("PRAGMA cipher_compatibility = 4")
        if cipher is not None:
            conn.execute(f"PRAGMA cipher_page_size = {int(cipher['page_size'])}")
            conn.execute(f"PRAGMA cipher_hmac_algorithm = {cipher['hmac']}")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Reading the schema is the first access that needs the key: a wrong key, a truncated
        # file or a flipped byte in page 1 fails here.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise CorruptVault(f"{path.name}: could not enable WAL (got {mode})")
        conn.execute("PRAGMA secure_delete = ON")
        if conn.execute("PRAGMA secure_delete").fetchone()[0] != 1:
            raise CorruptVault(f"{path.name}: secure_delete could not be enabled")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoint
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.term_stats = rank.TermStats()
        conn.has_rank = rank.load(conn)
    except sq.DatabaseError as exc:
        conn.close()
        raise translate(exc, path.name) from None
    return conn


def translate(exc: BaseException, what: str = "index.db") -> Exception:
    """Map an SQLite error to memctl's own exception, without leaking SQL or data."""
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return VaultBusy(f"{what}: the vault is busy (another process holds it); try again")
    if "full" in msg or "disk i/o" in msg or "no space" in msg:
        return NoSpace(f"{what}: disk full or I/O error while writing; nothing was committed")
    if "not a database" in msg or "malformed" in msg or "encrypted" in msg or "hmac" in msg:
        return CorruptVault(
            f"{what}: cannot be decrypted or is damaged (tampered, truncated or wrong key)"
        )
    return CorruptVault(f"{what}: database error ({type(exc).__name__}: {msg[:120]})")


def guard(fn: Any) -> Any:
    """Decorator: SQLite errors escaping a Vault method become memctl errors."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except db_errors() as exc:
            raise translate(exc) from None

    return wrapper
