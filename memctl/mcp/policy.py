"""What an MCP client may see and do: namespaces, read-only, erasure.

A :class:`Policy` is checked by every tool before it touches the vault, so a record outside a
client's namespaces is "not found" to ``get_memory``, invisible to ``recall`` and
``list_memories``, and out of reach of ``forget``. A refusal is an error the client sees,
never a silent no-op.

Policies come from the command line (``--namespace``, ``--read-only``, ``--allow-erase``) or
from a file (TOML or JSON) with a ``[default]`` section and one ``[clients."Name"]`` section per
client, matched on the name the client announces in ``initialize`` (after
:func:`sanitise_client_name`). That name is the client's own claim: per-client sections keep
well-behaved clients apart, while a hard boundary is a separate server entry started with flags.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memctl.errors import Refused, UsageError

MAX_CLIENT_NAME = 64
UNKNOWN_CLIENT = "unknown"
DEFAULT_WRITE_NAMESPACE = "default"  # memctl.vault.records.DEFAULT_NAMESPACE
_NAME_EXTRA = set(" ._-@+()")
_KEYS = {"namespaces", "read_only", "allow_erase", "write_namespace"}


def sanitise_client_name(raw: object) -> str:
    """A remote client's self-declared name, made safe to store and show.

    ASCII letters, digits, space and ``._-@+()`` are kept, anything else becomes ``_``; runs
    of spaces collapse and the result is cut to 64 characters. No name gives ``unknown``.
    """
    if not isinstance(raw, str):
        return UNKNOWN_CLIENT
    text = unicodedata.normalize("NFKC", raw)
    kept = "".join(c if (c.isascii() and c.isalnum()) or c in _NAME_EXTRA else "_" for c in text)
    name = " ".join(kept.split())[:MAX_CLIENT_NAME].strip()
    return name or UNKNOWN_CLIENT


def actor_for(client_name: str) -> str:
    """The provenance actor for a client's writes: ``mcp:<sanitised name>``."""
    return f"mcp:{sanitise_client_name(client_name)}"


def _check_namespace(ns: object) -> str:
    from memctl.vault.records import check_namespace

    return check_namespace(ns)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Policy:
    """One client's permissions. An empty ``namespaces`` means every namespace."""

    namespaces: tuple[str, ...] = ()
    read_only: bool = False
    allow_erase: bool = False
    write_namespace: str | None = None  # default: the first of ``namespaces``

    def __post_init__(self) -> None:
        for ns in self.namespaces:
            _check_namespace(ns)
        if self.write_namespace is not None:
            _check_namespace(self.write_namespace)
            if self.namespaces and self.write_namespace not in self.namespaces:
                raise UsageError(
                    f"policy: write_namespace {self.write_namespace!r} is not one of its namespaces"
                )

    # -- questions ------------------------------------------------------------------------
    @property
    def restricted(self) -> bool:
        return bool(self.namespaces)

    @property
    def can_write(self) -> bool:
        return not self.read_only

    @property
    def can_erase(self) -> bool:
        return self.allow_erase and not self.read_only

    @property
    def default_write_namespace(self) -> str:
        if self.write_namespace:
            return self.write_namespace
        return self.namespaces[0] if self.namespaces else DEFAULT_WRITE_NAMESPACE

    def can_see(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    # -- checks (raise Refused with a reason) ----------------------------------------------
    def read_namespaces(self, requested: Iterable[str] | None) -> list[str]:
        """The namespace filter for a read: the requested ones (each must be allowed), else
        every allowed one; ``[]`` means no restriction at all."""
        wanted = [_check_namespace(ns) for ns in requested or []]
        for ns in wanted:
            if not self.can_see(ns):
                raise Refused(
                    f"namespace {ns!r} is not available to this client "
                    f"(allowed: {', '.join(self.namespaces)})"
                )
        return wanted or list(self.namespaces)

    def write_namespace_for(self, requested: str | None) -> str:
        """Where a write goes: the requested namespace if allowed, else the default one."""
        if self.read_only:
            raise Refused(
                "this MCP server is read-only for this client: remember is not allowed",
                hint="start `memctl mcp` without --read-only (or change the policy file)",
            )
        if requested is None:
            return self.default_write_namespace
        ns = _check_namespace(requested)
        if not self.can_see(ns):
            raise Refused(
                f"namespace {ns!r} is not writable by this client "
                f"(allowed: {', '.join(self.namespaces)})"
            )
        return ns

    def check_erase(self) -> None:
        if self.read_only:
            raise Refused("this MCP server is read-only for this client: forget is not allowed")
        if not self.allow_erase:
            raise Refused(
                "erasure is not allowed for this client: forget is disabled",
                hint="start `memctl mcp --allow-erase` (or set allow_erase = true in the policy)",
            )

    def describe(self) -> dict[str, Any]:
        return {
            "namespaces": list(self.namespaces) or "all",
            "write_namespace": None if self.read_only else self.default_write_namespace,
            "read_only": self.read_only,
            "allow_erase": self.can_erase,
        }


@dataclass(frozen=True)
class PolicySet:
    """The default policy and per-client overrides, keyed by sanitised client name."""

    default: Policy = field(default_factory=Policy)
    clients: dict[str, Policy] = field(default_factory=dict)

    def for_client(self, client_name: str | None) -> Policy:
        name = sanitise_client_name(client_name)
        if name in self.clients:
            return self.clients[name]
        folded = name.casefold()
        for key, policy in self.clients.items():
            if key.casefold() == folded:
                return policy
        return self.default

    def tightened(self, *, read_only: bool) -> PolicySet:
        """Every policy made read-only (``--read-only`` on top of a policy file)."""
        if not read_only:
            return self
        return PolicySet(
            default=replace(self.default, read_only=True),
            clients={k: replace(p, read_only=True) for k, p in self.clients.items()},
        )

    @classmethod
    def from_flags(
        cls,
        namespaces: Iterable[str] | None = None,
        *,
        read_only: bool = False,
        allow_erase: bool = False,
    ) -> PolicySet:
        seen: list[str] = []
        for ns in namespaces or []:
            if ns not in seen:
                seen.append(ns)
        return cls(Policy(tuple(seen), read_only=read_only, allow_erase=allow_erase))

    @classmethod
    def from_mapping(cls, data: object, *, origin: str = "policy") -> PolicySet:
        if not isinstance(data, dict):
            raise UsageError(f"{origin}: expected a table/object at the top level")
        unknown = set(data) - {"default", "clients"}
        if unknown:
            raise UsageError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}")
        default = _section(data.get("default", {}), None, f"{origin} [default]")
        clients_raw = data.get("clients", {})
        if not isinstance(clients_raw, dict):
            raise UsageError(f"{origin}: [clients] must be a table of client names")
        clients: dict[str, Policy] = {}
        for raw_name, section in clients_raw.items():
            name = sanitise_client_name(raw_name)
            if name != raw_name:
                raise UsageError(
                    f"{origin}: client name {raw_name!r} can never match (clients are matched "
                    f"on {name!r}: ASCII letters, digits, space and ._-@+() only)"
                )
            clients[name] = _section(section, default, f'{origin} [clients."{raw_name}"]')
        return cls(default, clients)

    @classmethod
    def from_file(cls, path: Path) -> PolicySet:
        """Read a TOML (``.toml``) or JSON policy file."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read policy file {path}: {exc.strerror}") from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise UsageError(f"policy file {path} is not valid JSON: {exc}") from None
        else:
            import tomllib

            try:
                data = tomllib.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise UsageError(f"policy file {path} is not valid TOML: {exc}") from None
        return cls.from_mapping(data, origin=str(path))


def _section(section: object, base: Policy | None, where: str) -> Policy:
    """One policy table; keys it does not set come from ``base`` (the default section)."""
    if not isinstance(section, dict):
        raise UsageError(f"{where}: expected a table")
    unknown = set(section) - _KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    base = base or Policy()
    values: dict[str, Any] = {
        "namespaces": base.namespaces,
        "read_only": base.read_only,
        "allow_erase": base.allow_erase,
        "write_namespace": base.write_namespace,
    }
    if "namespaces" in section:
        ns = section["namespaces"]
        if not isinstance(ns, list) or not all(isinstance(n, str) for n in ns):
            raise UsageError(f"{where}: namespaces must be a list of strings")
        values["namespaces"] = tuple(dict.fromkeys(ns))
        if "write_namespace" not in section:
            values["write_namespace"] = None
    for key in ("read_only", "allow_erase"):
        if key in section:
            if not isinstance(section[key], bool):
                raise UsageError(f"{where}: {key} must be true or false")
            values[key] = section[key]
    if "write_namespace" in section:
        wns = section["write_namespace"]
        if not isinstance(wns, str):
            raise UsageError(f"{where}: write_namespace must be a string")
        values["write_namespace"] = wns
    try:
        return Policy(**values)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc.message}") from None
