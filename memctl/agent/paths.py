"""Where a vault's agent socket lives. Stdlib only: every CLI command computes this.

One socket per vault, named by a hash of the vault's resolved path, in a private directory:
``$XDG_RUNTIME_DIR/memctl/`` (tmpfs, owned by the user, removed at logout) or, when that is not
set, ``$TMPDIR/memctl-<uid>/`` (``/tmp`` by default), created 0700 and refused if it is a
symlink, someone else's, or open to others. A random ``mkdtemp`` name would be just as private
but a later command could not find it; the fixed per-uid name plus the ownership/mode check is
what tmux and ssh do. ``MEMCTL_AGENT_SOCKET`` overrides the socket path (like
``SSH_AUTH_SOCK``); the client still checks that the agent behind it serves the same vault.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from memctl.agent.protocol import AgentError

try:  # the builtin SHA-256: hashlib would load OpenSSL (~3 ms) on every CLI command
    from _sha2 import sha256  # type: ignore[import-not-found]  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,no-redef]  # 3.11
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment]

SOCKET_ENV = "MEMCTL_AGENT_SOCKET"
NO_AGENT_ENV = "MEMCTL_NO_AGENT"
HEADER_NAME = "header.json"  # memctl.vault.header.HEADER_NAME (not imported: it pulls crypto)
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL


def default_vault_path() -> Path:
    """Same as :func:`memctl.vault.core.default_vault_path`, without importing the core."""
    env = os.environ.get("MEMCTL_VAULT")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("memctl", appauthor=False)) / "default"


def resolve_vault(path: str | os.PathLike[str] | None) -> Path:
    """The vault's absolute path with symlinks resolved: one vault, one socket name."""
    vault = Path(path).expanduser() if path else default_vault_path()
    return Path(os.path.realpath(vault))


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isabs(base) and os.path.isdir(base):
        return Path(base) / "memctl"
    tmp = os.environ.get("TMPDIR") or "/tmp"  # noqa: S108 - a per-uid 0700 dir, checked below
    return Path(tmp) / f"memctl-{os.getuid()}"


class AgentPaths:
    """The socket, and the lock file the live agent holds (``flock``) for its whole life."""

    __slots__ = ("directory", "lock", "socket")

    def __init__(self, directory: Path, socket: Path, lock: Path) -> None:
        self.directory = directory
        self.socket = socket
        self.lock = lock  # a dead agent's lock is free: the kernel drops it, even on SIGKILL

    def __repr__(self) -> str:
        return f"AgentPaths(socket={str(self.socket)!r})"


def agent_paths(vault: Path) -> AgentPaths:
    """The socket and lock file for the (resolved) vault path ``vault``."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        sock = Path(env).expanduser()
        return AgentPaths(sock.parent, sock, sock.with_name(sock.name + ".lock"))
    directory = runtime_dir()
    name = sha256(os.fsencode(str(vault))).hexdigest()[:24]
    return AgentPaths(directory, directory / f"{name}.sock", directory / f"{name}.lock")


def private_dir_ok(path: Path) -> bool:
    """True if ``path`` is a real directory owned by us that nobody else can enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.getuid()
        and not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700 (and its parents 0700 where missing), or raise if it is unsafe."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise AgentError(f"cannot create the agent directory {path}: {exc.strerror}") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise AgentError(
            f"refusing to use the agent directory {path}: not a directory owned by you",
            hint="remove it, or set XDG_RUNTIME_DIR to a private directory",
        )
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o700)


def vault_id_on_disk(vault: Path) -> str | None:
    """The vault id from the header's public fields (no key needed), or None."""
    try:
        with open(vault / HEADER_NAME, "rb") as fh:
            data = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return None
    vid = data.get("vault_id") if isinstance(data, dict) else None
    return vid if isinstance(vid, str) else None


def sockaddr(path: Path) -> tuple[str, int | None]:
    """An address ``connect``/``bind`` accept, even when ``path`` is longer than sun_path.

    A long path goes through ``/proc/self/fd/<dirfd>/name``; the caller closes the fd.
    """
    if len(os.fsencode(str(path))) <= SUN_PATH_MAX:
        return str(path), None
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd
