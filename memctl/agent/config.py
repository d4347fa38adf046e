"""The agent's timeouts and the ``30m``/``2h``/``1h30m`` durations the CLI accepts.

Defaults, as for gpg-agent's cache: an idle timeout that locks a vault you walked away from
(15 minutes, like sudo's timestamp), and a hard limit after which you type the passphrase again
however busy you are (2 hours, gpg-agent's ``max-cache-ttl``). ``0`` disables either.
Both count time asleep (CLOCK_BOOTTIME): a suspended laptop wakes up locked.
"""

from __future__ import annotations

import re

from memctl.agent.protocol import PROTOCOL_VERSION

__all__ = ["DEFAULT_IDLE", "DEFAULT_TTL", "PROTOCOL_VERSION", "format_duration", "parse_duration"]

DEFAULT_TTL = 2 * 3600.0
DEFAULT_IDLE = 15 * 60.0
MAX_DURATION = 366 * 86400.0

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.I)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, *, what: str = "duration") -> float:
    """``90`` (seconds), ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d``; ``0`` means no limit."""
    from memctl.errors import UsageError

    value = text.strip().lower()
    if not value:
        raise UsageError(f"{what}: empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for m in _PART.finditer(value):
            if value[pos : m.start()].strip():
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2).lower()]
            pos = m.end()
        if pos == 0 or value[pos:].strip():
            raise UsageError(
                f"{what}: {text!r} is not a duration (use e.g. 90s, 30m, 2h, 1h30m, or 0)"
            ) from None
    if seconds < 0 or seconds != seconds or seconds > MAX_DURATION:
        raise UsageError(f"{what}: must be between 0 and 366 days")
    return seconds


def format_duration(seconds: float | None) -> str:
    if not seconds:
        return "none"
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            n, seconds = divmod(seconds, size)
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
