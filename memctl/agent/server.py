"""The agent daemon: one unlocked :class:`~memctl.vault.core.Vault` served over a Unix socket.

Concurrency: a thread per connection and one lock around the Vault (its single sqlite
connection is not thread-safe). The main thread only accepts and watches the clock, so
``ping``, ``lock`` and the timeouts stay instant while a long ingest holds the Vault, and a
client that connects and then stalls mid-frame blocks only its own thread. A single-threaded
selector loop would have serialised all of that behind the slowest request for no gain: the
Vault work itself is serial either way.

Every accepted connection's peer uid is checked with ``SO_PEERCRED``. The agent stops when
locked (``memctl lock``), after its hard TTL, after its idle timeout, on SIGTERM/SIGINT/SIGHUP,
when its socket file is removed or replaced, or when the vault at its path is replaced; it then
removes its socket, closes the Vault and overwrites the key bytes it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import os
import selectors
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memctl.agent import peer
from memctl.agent.paths import (
    HEADER_NAME,
    SOCKET_ENV,
    AgentPaths,
    ensure_private_dir,
    private_dir_ok,
)
from memctl.agent.protocol import (
    PROTOCOL_VERSION,
    VAULT_OPS,
    AgentError,
    AgentGone,
    AgentRunning,
    AgentUnsupported,
    ProtocolError,
    encode,
    error_payload,
    recv_frame,
    send_frame,
)
from memctl.errors import MemctlError, UsageError

MAX_CONNECTIONS = 64
CONN_READ_TIMEOUT = 600.0  # a connection silent this long is dropped (it never counts as use)
SELECT_CAP = 2.0  # wake at least this often: the clock may jump (suspend) and files may vanish
Log = Callable[[str], None]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def claim(paths: AgentPaths) -> int:
    """Take the per-vault agent lock (held for the agent's life). Returns its fd.

    Raises :class:`AgentRunning` when a live agent holds it. Because the kernel drops the lock
    when its holder dies (even by SIGKILL), whoever holds it may remove a stale socket file.
    """
    if not os.environ.get(SOCKET_ENV):
        ensure_private_dir(paths.directory)
    elif not private_dir_ok(paths.directory):
        raise AgentError(
            f"{SOCKET_ENV} must be in a directory only you can enter ({paths.directory})"
        )
    fd = os.open(paths.lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AgentRunning(
            "an agent is already running for this vault", hint="stop it with `memctl lock`"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def open_agent_vault(vault_path: Path, master: bytes, slot_id: str | None) -> Any:
    """Build the Vault from the header and a master key the parent already unlocked."""
    from memctl.crypto.keys import VaultKeys
    from memctl.vault import header as hdr
    from memctl.vault.core import Vault

    header = hdr.read_header(vault_path)
    keys = VaultKeys(master, header.vault_id)
    header.verify_public(keys)  # proves the key belongs to this vault before serving it
    return Vault(vault_path, header, keys, slot_id=slot_id, actor="cli")


def wipe_vault(vault: Any) -> None:
    """Close the Vault and overwrite every key it holds (best effort, see :mod:`peer`)."""
    with contextlib.suppress(Exception):
        vault.close()
    wipe_hook = getattr(vault, "wipe", None)
    if callable(wipe_hook):
        with contextlib.suppress(Exception):
            wipe_hook()
    for name, value in list(vars(vault).items()):
        if "key" in name and isinstance(value, bytes | bytearray) and name != "keys":
            peer.wipe(value)
            with contextlib.suppress(Exception):
                setattr(vault, name, None)
    keys = getattr(vault, "keys", None)
    if keys is not None:
        peer.wipe(getattr(keys, "master", None))
        with contextlib.suppress(Exception):
            vault.keys = None
    for name in ("embedder", "_embedder", "model", "_model"):
        if name in vars(vault):
            with contextlib.suppress(Exception):
                setattr(vault, name, None)


class AgentServer:
    """Serves one open Vault until stopped. ``serve_forever`` returns why it stopped."""

    def __init__(
        self,
        vault: Any,
        paths: AgentPaths,
        *,
        ttl: float | None,
        idle: float | None,
        log: Log | None = None,
        verbose: bool = False,
        wipe_also: tuple[Any, ...] = (),
    ) -> None:
        self.vault: Any = vault
        self.paths = paths
        self.ttl = ttl or None
        self.idle = idle or None
        self.log: Log = log or (lambda _msg: None)
        self.verbose = verbose
        self._wipe_also = list(wipe_also)
        self.vault_lock = threading.Lock()
        self._state = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.started = peer.clock()
        self.started_wall = time.time()
        self.last_activity = self.started
        self.busy = 0
        self.stop_reason: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.listener: socket.socket | None = None
        self._closed = False
        self._socket_ino: int | None = None
        self._header_sig = self._stat_header()
        self.vault_path = Path(os.path.realpath(vault.path))
        self.vault_id = vault.header.vault_id.hex()

    # -- state ---------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        with self._state:
            last = self.last_activity
        now_wall, now = time.time(), peer.clock()
        expires = self.started_wall + self.ttl if self.ttl else None
        idle_at = now_wall + (last + self.idle - now) if self.idle else None
        return {
            "running": True,
            "pid": os.getpid(),
            "vault": str(self.vault_path),
            "vault_id": self.vault_id,
            "socket": str(self.paths.socket),
            "protocol": PROTOCOL_VERSION,
            "started_at": _iso(self.started_wall),
            "expires_at": _iso(expires),
            "idle_timeout": self.idle,
            "idle_expires_at": _iso(idle_at),
        }

    def stop(self, reason: str) -> None:
        """Ask the main loop to stop (thread- and signal-safe)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _expiry(self, now: float) -> tuple[str | None, float]:
        """(reason to stop now, or None; seconds until the next deadline)."""
        with self._state:
            busy, last = self.busy, self.last_activity
        left = float("inf")
        if self.ttl:
            ttl_left = self.started + self.ttl - now
            if ttl_left <= 0:
                return "its time-to-live ran out", 0.0
            left = min(left, ttl_left)
        if self.idle and not busy:
            idle_left = last + self.idle - now
            if idle_left <= 0:
                return "it was idle too long", 0.0
            left = min(left, idle_left)
        return None, left

    # -- socket --------------------------------------------------------------------------------
    def bind(self) -> None:
        """Listen on the socket (0600). We hold the agent lock, so a file already there is stale."""
        from memctl.agent.paths import sockaddr

        path = self.paths.socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr, dirfd = sockaddr(path)
        old = os.umask(0o177)
        try:
            sock.bind(addr)
        finally:
            os.umask(old)
            if dirfd is not None:
                os.close(dirfd)
        os.chmod(path, 0o600)
        sock.listen(MAX_CONNECTIONS)
        sock.setblocking(False)
        self.listener = sock
        self._socket_ino = os.stat(path).st_ino

    def _socket_still_ours(self) -> bool:
        try:
            return os.stat(self.paths.socket).st_ino == self._socket_ino
        except OSError:
            return False

    def serve_forever(self) -> str:
        assert self.listener is not None, "bind() first"
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while self.stop_reason is None:
                reason, left = self._expiry(peer.clock())
                if reason:
                    self.stop(reason)
                    break
                for key, _ in sel.select(min(left, SELECT_CAP)):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 512)
                if self.stop_reason is None and not self._socket_still_ours():
                    self.stop("its socket file was removed or replaced")
        finally:
            sel.close()
            self._shutdown()
        return self.stop_reason or "stopped"

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log(f"accept failed: {exc.strerror}")
                return
            conn.setblocking(True)
            try:
                uid = peer.peer_uid(conn)
            except OSError:
                conn.close()
                continue
            if not peer.peer_allowed(uid, os.getuid()):
                self.log(f"refused a connection from uid {uid}")
                conn.close()
                continue
            if not self._slots.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    send_frame(conn, _err(AgentError("the agent has too many connections")))
                conn.close()
                continue
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(CONN_READ_TIMEOUT)
            while self.stop_reason is None:
                try:
                    req = recv_frame(conn)
                except ProtocolError as exc:
                    with contextlib.suppress(OSError):
                        send_frame(conn, _err(AgentError(f"bad request: {exc}")))
                    return
                except OSError:
                    return
                if req is None:
                    return
                reply, then_stop = self._handle(req)
                conn.settimeout(None)
                try:
                    send_frame(conn, reply)
                except ProtocolError:  # the client does it itself, reading the vault directly
                    send_frame(conn, _err(AgentUnsupported("the result is too large to send")))
                except OSError:
                    return
                conn.settimeout(CONN_READ_TIMEOUT)
                if then_stop:
                    self.stop("it was locked (`memctl lock`)")
                    return
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    # -- requests ------------------------------------------------------------------------------
    def _handle(self, req: Any) -> tuple[dict[str, Any], bool]:
        if not isinstance(req, dict):
            return _err(AgentError("bad request: not an object")), False
        if req.get("v") != PROTOCOL_VERSION:
            return _err(AgentError(f"protocol version {req.get('v')!r} is not supported")), False
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "result": self.info()}, False
        if op == "lock":
            return {"ok": True, "result": {"locked": True, "pid": os.getpid()}}, True
        if not isinstance(op, str) or op not in VAULT_OPS:
            return _err(AgentUnsupported(f"the agent does not serve {op!r}")), False
        with self._state:
            self.busy += 1
        started = time.perf_counter()
        try:
            return {"ok": True, "result": self._call_vault(op, req)}, False
        except MemctlError as exc:
            return _err(exc), False
        except Exception as exc:
            self.log(f"internal error in {op}:\n{traceback.format_exc(limit=8)}")
            return _err(AgentError(f"internal error in the agent ({type(exc).__name__})")), False
        finally:
            with self._state:
                self.busy -= 1
                self.last_activity = peer.clock()
            if self.verbose:
                self.log(f"{op} {1000 * (time.perf_counter() - started):.1f} ms")

    def _call_vault(self, op: str, req: dict[str, Any]) -> Any:
        from memctl.agent.protocol import decode

        args, pos = req.get("args") or {}, req.get("pos") or []
        if not isinstance(args, dict) or not isinstance(pos, list):
            raise UsageError("bad request: args must be an object and pos a list")
        args, pos = decode(args), decode(pos)
        actor = req.get("actor")
        if actor is not None:
            from memctl.vault.records import check_actor

            check_actor(actor)  # it ends up in records, receipts and the journal
        with self.vault_lock:
            reason, _ = self._expiry(peer.clock())
            if reason:
                self.stop(reason)
            if self.stop_reason is not None or self.vault is None:
                raise AgentGone("the agent is shutting down")
            vault = self.vault
            self._refresh_header(vault)
            fn = getattr(vault, op, None)
            if not callable(fn):
                raise AgentUnsupported(f"this vault has no operation {op!r}")
            try:
                inspect.signature(fn).bind(*pos, **args)
            except TypeError as exc:
                raise UsageError(f"{op}: {exc}") from None
            previous = vault.actor
            if isinstance(actor, str) and actor:
                vault.actor = actor
            try:
                result = fn(*pos, **args)
            finally:
                vault.actor = previous
            if op == "status" and isinstance(result, dict):
                result = {**result, "agent": self.info()}
            return encode(result)  # under the lock: lazy results still read the database

    def _stat_header(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(Path(self.vault.path) / HEADER_NAME)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _refresh_header(self, vault: Any) -> None:
        """Pick up keyslot changes (passwd, key add); stop if the vault was deleted/replaced."""
        sig = self._stat_header()
        if sig == self._header_sig:
            return
        if sig is None:
            self.stop("the vault's header disappeared")
            raise AgentGone("the vault's header disappeared; the agent stopped")
        from memctl.vault import header as hdr

        new = hdr.read_header(vault.path)
        if new.vault_id != vault.header.vault_id:
            self.stop("another vault replaced the one it served")
            raise AgentGone("the vault at this path was replaced; the agent stopped")
        new.verify_public(vault.keys)
        vault.header = new
        self._header_sig = sig

    # -- shutdown ------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.listener is not None:
            if self._socket_still_ours():
                with contextlib.suppress(OSError):
                    os.unlink(self.paths.socket)
            self.listener.close()
            self.listener = None
        with self.vault_lock:  # waits for the request in flight, if any
            vault, self.vault = self.vault, None
            if vault is not None:
                wipe_vault(vault)
            for buf in self._wipe_also:
                peer.wipe(buf)
            self._wipe_also.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _err(exc: MemctlError) -> dict[str, Any]:
    return {"ok": False, "error": error_payload(exc)}


def run(
    vault: Any,
    paths: AgentPaths,
    lock_fd: int,
    *,
    ttl: float | None,
    idle: float | None,
    log: Log | None = None,
    verbose: bool = False,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    install_signals: bool = True,
    wipe_also: tuple[Any, ...] = (),
) -> str:
    """Serve ``vault`` until stopped; always removes the socket and wipes keys. Returns why."""
    try:
        server = AgentServer(
            vault, paths, ttl=ttl, idle=idle, log=log, verbose=verbose, wipe_also=wipe_also
        )
    except BaseException:
        wipe_vault(vault)
        for buf in wipe_also:
            peer.wipe(buf)
        os.close(lock_fd)
        raise
    try:
        server.bind()
        if install_signals:

            def on_signal(signum: int, _frame: Any) -> None:
                server.stop(f"it received {signal.Signals(signum).name}")

            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, on_signal)
        if on_ready is not None:
            on_ready(server.info())
        threading.Thread(target=_warm, args=(server,), daemon=True).start()
        return server.serve_forever()
    finally:
        server._shutdown()  # idempotent: serve_forever already did it unless bind() failed
        with contextlib.suppress(OSError):
            os.close(lock_fd)


def _warm(server: AgentServer) -> None:
    """Load the embedding model now, not on the first recall (``Vault.warm`` if the core has it)."""
    with server.vault_lock:
        vault = server.vault
        warm = getattr(vault, "warm", None) if vault is not None else None
        if not callable(warm):
            return
        started = time.perf_counter()
        try:
            warm()
        except MemctlError as exc:
            server.log(f"could not warm up the model: {exc.message}")
            return
        except Exception as exc:
            server.log(f"could not warm up the model ({type(exc).__name__})")
            return
    server.log(f"model warm in {time.perf_counter() - started:.1f} s")
