"""Time parsing and formatting. Stored times are ISO-8601 UTC strings ending in ``Z``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from memctl.errors import UsageError

_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|y)\s*$", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(utcnow())


def parse_time(value: object, *, what: str = "time") -> str:
    """Normalise a datetime, date, epoch number or ISO-8601 string to stored form.

    Naive times are taken as UTC. Raises :class:`UsageError` naming ``what``.
    """
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return iso(datetime(value.year, value.month, value.day, tzinfo=UTC))
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return iso(datetime.fromtimestamp(float(value), UTC))
        except (OverflowError, OSError, ValueError):
            raise UsageError(f"{what}: epoch value out of range") from None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z") or text.endswith("z"):
            text = text[:-1] + "+00:00"
        try:
            return iso(datetime.fromisoformat(text))
        except ValueError:
            pass
    raise UsageError(
        f"{what}: not a date or time (use ISO-8601, e.g. 2024-05-01 or 2024-05-01T09:30)"
    )


def parse_bound(value: str | None, *, what: str) -> str | None:
    """A --since/--until value: ISO date/time or a relative age like ``7d``, ``12h``, ``2w``."""
    if value is None or value == "":
        return None
    m = _RELATIVE.match(value)
    if m:
        seconds = int(m.group(1)) * _UNITS[m.group(2).lower()]
        return iso(utcnow() - timedelta(seconds=seconds))
    return parse_time(value, what=what)
