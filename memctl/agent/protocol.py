"""The agent's wire format: length-prefixed JSON frames, typed values, typed errors.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. A request is
``{"v": 1, "op": NAME, "args": {...}, "pos": [...], "actor": "cli"}`` (``pos`` optional: the
positional arguments); a reply is ``{"ok": true, "result": VALUE}`` or ``{"ok": false,
"error": {"type", "message", "hint", "exit_code"}}``. The client re-raises the same memctl
exception class, so exit codes are identical with and without the agent.

Values are JSON with three tagged forms, so Vault results survive the trip: ``{"$dc": "module:
QualName", "f": {...}}`` for a dataclass (e.g. ``IngestSummary``), ``{"$bytes": BASE64}`` and
``{"$dict": {...}}`` (escapes a plain dict that happens to use one of these keys). Datetimes and
paths travel as strings. Stdlib only: the CLI imports this on every command.
"""

from __future__ import annotations

import json
import socket
import struct
from datetime import date, datetime
from pathlib import PurePath
from typing import Any, NoReturn

from memctl.errors import ExitCode, MemctlError

PROTOCOL_VERSION = 1
MAX_FRAME = 128 * 1024 * 1024
_LEN = struct.Struct(">I")
_RESERVED = frozenset({"$dc", "$bytes", "$dict"})

# Vault methods the agent runs for a client: ``getattr(vault, op)(*pos, **args)``, so a method
# the core gains later works through the agent once its name is here. Anything else (passwd,
# key add/remove: they must ask for the real secret; record keys: never leave the agent) is
# done by the client itself after a local unlock.
READ_OPS = frozenset(
    {
        "recall",
        "get",
        "list",
        "status",
        "resolve_id",
        "default_mode",
        "list_keyslots",
        "integrity_check",
        "audit",
        "audit_verify",
        "provenance",
        "export",
        "erased_receipts",
    }
)
# Writes that are safe to repeat (ingest is idempotent by content MAC and source locator).
IDEMPOTENT_WRITE_OPS = frozenset({"ingest", "ingest_many"})
WRITE_OPS = IDEMPOTENT_WRITE_OPS | {"erase"}
VAULT_OPS = READ_OPS | WRITE_OPS
# What a client may redo locally when the agent died before answering.
RETRYABLE_OPS = READ_OPS | IDEMPOTENT_WRITE_OPS


class ProtocolError(Exception):
    """A malformed or oversized frame (the connection is dropped, nothing is executed)."""


class AgentError(MemctlError):
    """Something about the agent itself went wrong (not the vault)."""

    exit_code = ExitCode.ERROR


class AgentGone(AgentError):
    """The agent closed the connection or died. ``sent``: whether the request got out."""

    def __init__(self, message: str, *, sent: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.sent = sent


class AgentRunning(AgentError):
    """Another agent already serves this vault."""


class AgentUnsupported(AgentError):
    """The agent does not serve this operation; the client does it locally instead."""


# -- frames -------------------------------------------------------------------------------------
def send_frame(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME}-byte limit")
    sock.sendall(_LEN.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> Any | None:
    """The next frame's JSON, or None on a clean end of stream between frames."""
    head = _recv_exact(sock, _LEN.size, eof_ok=True)
    if head is None:
        return None
    (length,) = _LEN.unpack(head)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    body = _recv_exact(sock, length, eof_ok=False)
    assert body is not None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError("frame is not valid UTF-8 JSON") from None


def _recv_exact(sock: socket.socket, n: int, *, eof_ok: bool) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0 and eof_ok:
                return None
            raise ConnectionResetError("connection closed in the middle of a frame")
        got += k
    return bytes(buf)


# -- values -------------------------------------------------------------------------------------
def encode(value: Any) -> Any:
    """A JSON-ready copy of ``value``. Raises TypeError for anything that cannot travel."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"dict key of type {type(k).__name__} cannot be sent")
            out[k] = encode(v)
        return {"$dict": out} if _RESERVED.intersection(out) else out
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        import base64

        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses  # loaded already (value's class is one); not on the CLI's path

        cls = type(value)
        return {
            "$dc": f"{cls.__module__}:{cls.__qualname__}",
            "f": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return encode(value.item())  # numpy scalars (scores)
    if hasattr(value, "__next__") and hasattr(value, "__iter__"):
        return [encode(v) for v in value]  # generators and other iterators
    raise TypeError(f"a value of type {type(value).__name__} cannot be sent to the agent")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (top-down, so ``$dict`` escapes stay exact)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and "$dict" in value and isinstance(value["$dict"], dict):
        return {k: decode(v) for k, v in value["$dict"].items()}
    if len(value) == 1 and "$bytes" in value:
        import base64

        return base64.b64decode(value["$bytes"])
    if len(value) == 2 and "$dc" in value and isinstance(value.get("f"), dict):
        fields = {k: decode(v) for k, v in value["f"].items()}
        return _rebuild_dataclass(str(value["$dc"]), fields)
    return {k: decode(v) for k, v in value.items()}


def _rebuild_dataclass(name: str, fields: dict[str, Any]) -> Any:
    """Rebuild a memctl dataclass by name; anything unknown stays a plain dict of fields."""
    import dataclasses
    import importlib

    module, _, qualname = name.partition(":")
    if not (module == "memctl" or module.startswith("memctl.")):
        return fields
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
            return fields
        init = {f.name for f in dataclasses.fields(obj) if f.init}
        inst = obj(**{k: v for k, v in fields.items() if k in init})
        for k, v in fields.items():
            if k not in init:
                object.__setattr__(inst, k, v)
        return inst
    except (ImportError, AttributeError, TypeError, ValueError):
        return fields


# -- errors -------------------------------------------------------------------------------------
def error_payload(exc: MemctlError) -> dict[str, Any]:
    cls = type(exc)
    return {
        "type": cls.__name__,
        "module": cls.__module__,
        "message": exc.message,
        "hint": exc.hint,
        "exit_code": int(exc.exit_code),
    }


def raise_remote(payload: Any) -> NoReturn:
    """Raise the memctl exception an error reply describes (same class, message, exit code)."""
    if not isinstance(payload, dict):
        raise AgentError("the agent sent a malformed error reply")
    name = str(payload.get("type") or "MemctlError")
    message = str(payload.get("message") or "the agent reported an error")
    hint = payload.get("hint")
    hint = str(hint) if hint is not None else None
    cls = _error_class(name, str(payload.get("module") or ""))
    try:
        exc = cls(message, hint=hint)
    except TypeError:
        exc = MemctlError(message, hint=hint)
    code = payload.get("exit_code")
    if isinstance(code, int) and code != int(exc.exit_code):
        try:
            exc.exit_code = ExitCode(code)
        except ValueError:
            exc.exit_code = ExitCode.ERROR
    raise exc


def _error_class(name: str, module: str) -> type[MemctlError]:
    import memctl.errors as errors_mod

    candidates: list[Any] = [errors_mod, globals()]
    if module.startswith("memctl.") and module not in ("memctl.errors", __name__):
        try:
            import importlib

            candidates.append(importlib.import_module(module))
        except ImportError:
            pass
    for where in candidates:
        cls = where.get(name) if isinstance(where, dict) else getattr(where, name, None)
        if isinstance(cls, type) and issubclass(cls, MemctlError):
            return cls
    return MemctlError
