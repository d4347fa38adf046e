"""Starting the detached agent and handing it the master key through a pipe.

``memctl unlock`` unlocks in the foreground (prompts and passphrase files work as always), then
runs ``python -m memctl.agent --vault PATH --ttl S --idle S --detach`` in a new session. The
child forks once more (so it is nobody's child and never a zombie of the caller), reads one key
frame from its stdin, and answers on its stdout with one JSON line (``{"ok": true, "result":
INFO}`` once it is listening, or ``{"ok": false, "error": ...}``). The key never appears in
argv or the environment; ``MEMCTL_PASSPHRASE_FILE``/``MEMCTL_KEY_FILE`` are not passed on.
The agent's stderr goes to a 0600 log file next to its socket (start/stop lines, error types;
never arguments, record text or keys).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from memctl.agent import peer
from memctl.agent.paths import agent_paths, ensure_private_dir
from memctl.agent.protocol import AgentError, raise_remote

KEY_MAGIC = b"MEMCTL-AGENT-KEY-1\n"
MASTER_LEN = 32
START_TIMEOUT = 60.0
DROP_ENV = ("MEMCTL_PASSPHRASE_FILE", "MEMCTL_KEY_FILE")


def key_frame(master: bytes, slot_id: str | None) -> bytearray:
    slot = (slot_id or "").encode("ascii")
    if len(master) != MASTER_LEN or len(slot) > 255:
        raise AgentError("internal error: bad key handover")
    return bytearray(KEY_MAGIC + bytes([len(slot)]) + slot + master)


def read_key_frame(stream: IO[bytes]) -> tuple[bytearray, str | None]:
    """Read the handover frame; the key lands in a bytearray we can overwrite later."""
    magic = _read_exact(stream, len(KEY_MAGIC))
    if bytes(magic) != KEY_MAGIC:
        raise AgentError("the agent expected a key on its stdin (start it with `memctl unlock`)")
    slot_len = _read_exact(stream, 1)[0]
    slot = bytes(_read_exact(stream, slot_len)).decode("ascii") if slot_len else None
    master = _read_exact(stream, MASTER_LEN)
    return master, slot


def _read_exact(stream: IO[bytes], n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise AgentError("the agent's key handover was cut short")
        got += k
    return buf


def log_path(vault: Path) -> Path:
    sock = agent_paths(vault).socket
    return sock.with_name(sock.name.removesuffix(".sock") + ".log")


def start_agent(
    vault: Path,
    master: bytes,
    slot_id: str | None,
    *,
    ttl: float,
    idle: float,
    timeout: float = START_TIMEOUT,
) -> dict[str, Any]:
    """Start the agent for ``vault`` (a resolved path); return its info once it listens.

    Raises :class:`~memctl.agent.protocol.AgentRunning` if one already serves the vault, or
    the memctl error the agent hit while opening the vault.
    """
    paths = agent_paths(vault)
    if not os.environ.get("MEMCTL_AGENT_SOCKET"):
        ensure_private_dir(paths.directory)
    cmd = [
        sys.executable,
        "-m",
        "memctl.agent",
        "--vault",
        str(vault),
        "--ttl",
        repr(float(ttl)),
        "--idle",
        repr(float(idle)),
        "--detach",
    ]
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    log = log_path(vault)
    log_fd = os.open(log, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(log_fd, 0o600)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            env=env,
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    frame = key_frame(master, slot_id)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(frame)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        line = _read_line(proc.stdout, timeout)
    finally:
        peer.wipe(frame)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # the first process exits right after its fork
    try:
        reply = json.loads(line) if line else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise AgentError("the agent did not start", hint=f"see {log} for what went wrong")
    if reply.get("ok") is True and isinstance(reply.get("result"), dict):
        return reply["result"]
    raise_remote(reply.get("error"))


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0]
