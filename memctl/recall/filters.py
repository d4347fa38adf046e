"""Record filters shared by every recall mode, list, erase and export.

A :class:`Filters` compiles to an SQL ``WHERE`` fragment over ``records r`` with bound
parameters only (no value is ever spliced into SQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memctl.errors import UsageError
from memctl.timeutil import parse_bound


@dataclass
class Filters:
    namespaces: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # all must be present
    kinds: list[str] = field(default_factory=list)
    source: str | None = None  # exact URI or prefix
    since: str | None = None  # stored-form bounds on observed_at (else ingested_at)
    until: str | None = None
    min_trust: int | None = None
    ids: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        *,
        namespace: str | list[str] | tuple[str, ...] | None = None,
        tags: str | list[str] | tuple[str, ...] | None = None,
        kind: str | list[str] | tuple[str, ...] | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        min_trust: int | str | None = None,
    ) -> Filters:
        from memctl.vault.records import check_namespace, normalise_tags, parse_trust

        def as_list(value: Any) -> list[str]:
            if value is None:
                return []
            return [value] if isinstance(value, str) else list(value)

        f = cls(
            namespaces=[check_namespace(n) for n in as_list(namespace)],
            tags=normalise_tags(as_list(tags)),
            kinds=as_list(kind),
            source=source or None,
            since=parse_bound(since, what="--since"),
            until=parse_bound(until, what="--until"),
            min_trust=parse_trust(min_trust) if min_trust is not None else None,
        )
        if f.since and f.until and f.since > f.until:
            raise UsageError("--since is after --until")
        return f

    def is_empty(self) -> bool:
        return not (
            self.namespaces
            or self.tags
            or self.kinds
            or self.source
            or self.since
            or self.until
            or self.min_trust
            or self.ids
        )

    def sql(self, alias: str = "r") -> tuple[str, list[Any]]:
        """``(where_fragment, params)``; the fragment is ``1`` when nothing filters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.namespaces:
            clauses.append(f"{alias}.namespace IN ({','.join('?' * len(self.namespaces))})")
            params += self.namespaces
        for tag in self.tags:
            clauses.append(
                f"EXISTS (SELECT 1 FROM record_tags t WHERE t.tag = ? "
                f"AND t.record_rowid = {alias}.rowid)"
            )
            params.append(tag)
        if self.kinds:
            clauses.append(f"{alias}.kind IN ({','.join('?' * len(self.kinds))})")
            params += self.kinds
        if self.source:
            # exact match, or a prefix: "file:///home/me/notes/" matches everything under it
            clauses.append(f"({alias}.source = ? OR substr({alias}.source, 1, ?) = ?)")
            params += [self.source, len(self.source), self.source]
        when = f"coalesce({alias}.observed_at, {alias}.ingested_at)"
        if self.since:
            clauses.append(f"{when} >= ?")
            params.append(self.since)
        if self.until:
            clauses.append(f"{when} <= ?")
            params.append(self.until)
        if self.min_trust is not None:
            clauses.append(f"{alias}.trust >= ?")
            params.append(self.min_trust)
        if self.ids:
            clauses.append(f"{alias}.id IN ({','.join('?' * len(self.ids))})")
            params += self.ids
        return (" AND ".join(clauses) or "1"), params
