"""The CLI side: find a vault's agent, talk to it, and stand in for a Vault.

This module is on the path of every CLI command, so it is stdlib + memctl's light modules
only: no sqlcipher3, cryptography, numpy or torch (a test checks). ``memctl recall`` through
the agent costs a connect, a ``ping`` (is it alive, same vault, same protocol?) and one
request.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from memctl.agent.paths import (
    NO_AGENT_ENV,
    SOCKET_ENV,
    AgentPaths,
    agent_paths,
    private_dir_ok,
    resolve_vault,
    sockaddr,
    vault_id_on_disk,
)
from memctl.agent.protocol import (
    PROTOCOL_VERSION,
    RETRYABLE_OPS,
    VAULT_OPS,
    AgentError,
    AgentGone,
    AgentUnsupported,
    ProtocolError,
    decode,
    encode,
    raise_remote,
    recv_frame,
    send_frame,
)
from memctl.errors import MemctlError, VaultLocked

CONNECT_TIMEOUT = 2.0  # connect + ping: an agent that does not answer is treated as absent
INGEST_CHUNK = 1000  # items per ingest request (Vault.ingest_many's batch size)
INGEST_CHUNK_CHARS = 16 * 1024 * 1024  # ... or this much text, whichever comes first
GONE_HINT = (
    "run `memctl unlock` to start a new agent, or pass --passphrase-file FILE / --key-file FILE"
)


def agent_disabled() -> bool:
    return os.environ.get(NO_AGENT_ENV, "") not in ("", "0")


class AgentClient:
    """A connection to the agent serving one vault. ``connect`` returns None if there is none."""

    def __init__(self, sock: socket.socket, paths: AgentPaths, vault: Path, info: dict[str, Any]):
        self.sock: socket.socket | None = sock
        self.paths = paths
        self.vault = vault
        self.info = info

    @classmethod
    def connect(
        cls, vault: str | os.PathLike[str] | None = None, *, verify: bool = True
    ) -> AgentClient | None:
        """Connect to the live agent for ``vault`` (default: the default vault), or None.

        None when there is no socket, the socket is stale (then it is removed), the peer is not
        our uid, the agent does not answer a ping within 2 s, or (``verify``) it serves another
        vault than the one now at that path.
        """
        try:
            path = resolve_vault(vault)
            paths = agent_paths(path)
        except (OSError, ValueError):
            return None
        if not os.environ.get(SOCKET_ENV) and not private_dir_ok(paths.directory):
            return None
        client = cls.at(paths, path)
        if client is None or not verify:
            return client
        info = client.info
        if info.get("vault") != str(path) or info.get("vault_id") != vault_id_on_disk(path):
            client.close()
            return None
        return client

    @classmethod
    def at(cls, paths: AgentPaths, vault: Path | None = None) -> AgentClient | None:
        """Connect to the socket ``paths.socket`` and ping: peer uid and protocol checked."""
        sock = _connect(paths)
        if sock is None:
            return None
        try:
            from memctl.agent.peer import peer_allowed, peer_uid

            if not peer_allowed(peer_uid(sock), os.getuid()):
                raise ConnectionRefusedError("agent socket owned by another user")
            client = cls(sock, paths, vault or Path(), {})
            info = client.call("ping")
        except (OSError, ProtocolError, MemctlError):
            sock.close()
            return None
        if not isinstance(info, dict) or info.get("protocol") != PROTOCOL_VERSION:
            sock.close()
            return None
        client.info = info
        if vault is None:
            client.vault = Path(str(info.get("vault") or ""))
        sock.settimeout(None)  # a first hybrid recall may wait for the model to load
        return client

    # -- requests ------------------------------------------------------------------------------
    @staticmethod
    def request(
        op: str, pos: Iterable[Any] = (), args: dict[str, Any] | None = None, *, actor: str = "cli"
    ) -> dict[str, Any]:
        """The request frame. TypeError if an argument cannot travel (the caller falls back)."""
        req: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op, "args": encode(args or {})}
        pos = list(pos)
        if pos:
            req["pos"] = encode(pos)
        req["actor"] = actor
        return req

    def roundtrip(self, req: dict[str, Any]) -> Any:
        """Send one request, return the decoded result or raise the remote memctl error."""
        if self.sock is None:
            raise AgentGone("the agent connection is closed")
        sent = False
        try:
            send_frame(self.sock, req)
            sent = True
            reply = recv_frame(self.sock)
        except ProtocolError as exc:
            if not sent:
                raise AgentUnsupported(f"request too large for the agent ({exc})") from None
            self.close()
            raise AgentGone(f"the agent sent a bad reply ({exc})", sent=True) from None
        except OSError:
            self.close()
            raise AgentGone("the agent went away", sent=sent, hint=GONE_HINT) from None
        if reply is None:
            self.close()
            raise AgentGone("the agent went away", sent=True, hint=GONE_HINT)
        if not isinstance(reply, dict):
            raise AgentError("the agent sent a malformed reply")
        if reply.get("ok") is True:
            return decode(reply.get("result"))
        raise_remote(reply.get("error"))

    def call(self, op: str, *pos: Any, actor: str = "cli", **args: Any) -> Any:
        return self.roundtrip(self.request(op, pos, args, actor=actor))

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def lock(self, wait: float = 30.0) -> dict[str, Any]:
        """Ask the agent to stop; wait (up to ``wait`` s) until it has wiped its keys.

        The agent releases its lock file last, after removing the socket and wiping, so a free
        lock means done. ``result["done"]`` is False if it is still finishing a request.
        """
        result = dict(self.call("lock"))
        self.close()
        deadline = time.monotonic() + wait
        while not (done := _lock_free(self.paths)) and time.monotonic() < deadline:
            time.sleep(0.01)
        result["done"] = done
        return result

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _connect(paths: AgentPaths) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    dirfd = None
    try:
        addr, dirfd = sockaddr(paths.socket)
        sock.connect(addr)
        return sock
    except ConnectionRefusedError:
        sock.close()
        remove_stale(paths)
        return None
    except OSError:
        sock.close()
        return None
    finally:
        if dirfd is not None:
            os.close(dirfd)


def _lock_free(paths: AgentPaths) -> bool:
    """True if no live agent holds the lock file of ``paths``."""
    try:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops our lock too
    return True


def remove_stale(paths: AgentPaths) -> bool:
    """Remove a dead agent's socket file. Safe: only when no live agent holds the lock."""
    if not os.path.lexists(paths.socket):
        return False
    try:
        fd = os.open(paths.lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # an agent is alive (starting, or too busy to accept): leave it be
        try:
            os.unlink(paths.socket)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def connect_vault(
    vault: str | os.PathLike[str] | None, *, actor: str, open_local: Callable[[], Any]
) -> VaultProxy | None:
    """A :class:`VaultProxy` if an agent serves ``vault``, else None (and the CLI unlocks)."""
    if agent_disabled():
        return None
    client = AgentClient.connect(vault)
    return VaultProxy(client, actor=actor, open_local=open_local) if client else None


class VaultProxy:
    """Stands in for a Vault: the agent serves what it can, a local unlock does the rest.

    - Operations in the agent's list (recall, get, list, status, ingest_many, ...) go to the
      agent and return what the Vault returns (``IngestSummary`` included).
    - Anything else (change_passphrase, add_key_file, ...: they must ask for the real secret)
      and arguments that cannot travel are done on a Vault unlocked locally, on first use.
    - If the agent dies, a request it never got, or one that is safe to repeat, is redone
      locally when the usual credentials allow; otherwise the error says what happened.
    """

    def __init__(self, client: AgentClient, *, actor: str, open_local: Callable[[], Any]):
        self._client: AgentClient | None = client
        self._open_local = open_local
        self._local: Any = None
        self.path = client.vault
        self.actor = actor
        self.agent: dict[str, Any] = dict(client.info)

    def __enter__(self) -> VaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        local, self._local = self._local, None
        if local is not None:
            local.close()

    @property
    def via_agent(self) -> bool:
        return self._client is not None and self._local is None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in VAULT_OPS:

            def remote(*pos: Any, **kw: Any) -> Any:
                return self._call(name, pos, kw)

            remote.__name__ = name
            return remote
        return getattr(self._local_vault(), name)

    def _local_vault(self, *, agent_gone: bool = False) -> Any:
        if self._local is None:
            try:
                self._local = self._open_local()
            except VaultLocked as exc:
                if not agent_gone:
                    raise
                raise VaultLocked(
                    "the agent went away and no other way to unlock the vault was given",
                    hint=GONE_HINT,
                ) from exc
        return self._local

    def _call(self, op: str, pos: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        client = self._client
        if client is None:
            return getattr(self._local_vault(), op)(*pos, **kw)
        try:
            req = client.request(op, pos, kw, actor=self.actor)
        except TypeError:
            return getattr(self._local_vault(), op)(*pos, **kw)
        try:
            return client.roundtrip(req)
        except AgentUnsupported:
            return getattr(self._local_vault(), op)(*pos, **kw)
        except AgentGone as gone:
            client.close()
            self._client = None
            repeatable = op in RETRYABLE_OPS or (op == "erase" and kw.get("dry_run") is True)
            if gone.sent and not repeatable:
                raise AgentError(
                    f"the agent went away during {op}; it may or may not have completed",
                    hint="check (e.g. `memctl list`) before retrying; " + GONE_HINT,
                ) from None
            local = self._local_vault(agent_gone=True)
            sys.stderr.write("memctl: warning: the agent went away; unlocked the vault locally\n")
            return getattr(local, op)(*pos, **kw)

    def ingest_many(
        self,
        items: Iterable[dict[str, Any] | str],
        *,
        strict: bool = False,
        batch_size: int = INGEST_CHUNK,
        progress: Any = None,
        **defaults: Any,
    ) -> Any:
        """Vault.ingest_many through the agent, in chunks (bounded frames, progress per chunk)."""
        if self._client is None:
            return self._local_vault().ingest_many(
                items, strict=strict, batch_size=batch_size, progress=progress, **defaults
            )
        from memctl.vault.core import IngestSummary

        total = IngestSummary()
        chunk: list[Any] = []
        chars = 0
        offset = 0

        def flush() -> None:
            nonlocal chunk, chars, offset
            kw = {"strict": strict, "batch_size": batch_size, **defaults}
            part = self._call("ingest_many", (chunk,), kw)
            if isinstance(part, dict):
                part = IngestSummary(**part)
            part.errors = [_shift_item_index(e, offset) for e in part.errors]
            total.merge(part)
            if progress:
                progress(len(chunk))
            offset += len(chunk)
            chunk, chars = [], 0

        limit = max(1, min(int(batch_size), INGEST_CHUNK))
        for item in items:
            chunk.append(item)
            text = item.get("text") if isinstance(item, dict) else item
            chars += len(text) if isinstance(text, str) else 0
            if len(chunk) >= limit or chars >= INGEST_CHUNK_CHARS:
                flush()
        if chunk:
            flush()
        return total


_ITEM_INDEX = re.compile(r"^item (\d+):")


def _shift_item_index(message: str, offset: int) -> str:
    """Errors name items by index; a chunk's index 3 is the whole input's offset + 3."""
    if not offset:
        return message
    return _ITEM_INDEX.sub(lambda m: f"item {int(m.group(1)) + offset}:", message, count=1)


def running_agents() -> list[AgentClient]:
    """Every live agent of ours in the runtime directory (for ``memctl lock --all``)."""
    from memctl.agent.paths import runtime_dir

    directory = runtime_dir()
    if not private_dir_ok(directory):
        return []
    found = []
    for sock in sorted(directory.glob("*.sock")):
        paths = AgentPaths(directory, sock, sock.with_suffix(".lock"))
        client = AgentClient.at(paths)
        if client is not None:
            found.append(client)
    return found


def agent_status(vault: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What ``memctl status`` shows about the agent (without unlocking anything)."""
    client = AgentClient.connect(vault)
    if client is None:
        return {"running": False, "expires_at": None, "idle_timeout": None}
    try:
        return dict(client.info)
    finally:
        client.close()


def describe_agent(info: dict[str, Any] | None) -> str:
    """One line for humans: ``running (pid 123) until …, locks after 15m idle``."""
    from memctl.agent.config import format_duration

    if not info or not info.get("running"):
        return "not running (`memctl unlock` starts it)"
    parts = [f"running (pid {info.get('pid')})"]
    if info.get("expires_at"):
        parts.append(f"until {info['expires_at']}")
    if info.get("idle_timeout"):
        parts.append(f"locks after {format_duration(info['idle_timeout'])} idle")
    return ", ".join(parts)
