"""Who is on the other end of the socket, and keeping the agent's memory to itself.

- :func:`peer_uid` reads ``SO_PEERCRED`` (the kernel's word, not the peer's) and
  :func:`peer_allowed` accepts only our own uid: the agent refuses every other user, root
  included (root can read our memory anyway, but has no business asking us).
- :func:`harden_process` turns core dumps off (``RLIMIT_CORE`` 0) and makes the process
  non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no core file with keys in it, and other
  same-uid processes can neither ptrace it nor read its ``/proc/<pid>/mem`` or ``environ``.
  Best effort: where a call is missing, it is skipped and reported.
- :func:`wipe` overwrites key bytes before the agent lets go of them. Best effort too: Python
  may have made copies we cannot reach (derived keys, SQLCipher's own copy is freed and zeroed
  by SQLCipher on close). Swap is not prevented (``mlock`` limits are far below a loaded model).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time
from typing import Any

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
PR_SET_DUMPABLE = 4


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    return peer_cred(sock)[1]


def peer_allowed(uid_of_peer: int, own_uid: int) -> bool:
    """Only the agent's own user may talk to it."""
    return uid_of_peer >= 0 and uid_of_peer == own_uid


def harden_process() -> dict[str, bool]:
    """No core dumps, not dumpable. Returns what took effect (for the foreground log)."""
    done = {"no_core": False, "not_dumpable": False}
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        done["no_core"] = True
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            done["not_dumpable"] = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass
    return done


def wipe(buf: Any) -> None:
    """Overwrite a bytearray, or (best effort) the buffer of a bytes object, with zeros.

    Only for objects about to be dropped: a wiped ``bytes`` must never be used again.
    Bytes of length < 2 are skipped (CPython shares those).
    """
    if buf is None:
        return
    if isinstance(buf, bytearray):
        for i in range(len(buf)):
            buf[i] = 0
        return
    if isinstance(buf, bytes) and len(buf) >= 2:
        import ctypes

        offset = sys.getsizeof(buf) - len(buf) - 1  # PyBytesObject header; data ends with NUL
        with contextlib.suppress(Exception):
            ctypes.memset(id(buf) + offset, 0, len(buf))


def clock() -> float:
    """Seconds on a clock that keeps running while the machine sleeps (CLOCK_BOOTTIME).

    A TTL must count a laptop's suspend: CLOCK_MONOTONIC stops during it.
    """
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            return time.clock_gettime(boottime)
        except OSError:
            pass
    return time.monotonic()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
