"""The fast path: ``memctl recall`` served by a running agent without loading typer/click/rich.

The Typer application costs more to import than the recall itself takes in a warm agent, so
:func:`memctl.cli.main` first offers the command line to :func:`run`. It serves only what it can
print exactly as the Typer ``recall`` command (memctl/cli/recall_cmd.py) would:

- argv is parsed strictly: the root options ``--vault``, ``--passphrase-file``,
  ``--passphrase-command``, ``--key-file``, ``-q/--quiet``, then ``recall`` with one query and
  only the options that command has (``--opt value`` and ``--opt=value``; ``-l/-n/-t VALUE``;
  ``--`` ends the options). Anything else (``--help``, an unknown option, a missing or extra
  argument, a limit that is not digits, an option value starting with ``-``, an empty path)
  is not served;
- the agent must be running (and serve the vault); the request, the reply and the errors go
  through the same :class:`~memctl.agent.client.VaultProxy` the Typer command uses, so
  messages and exit codes are the agent's own. What that proxy would hand to a local unlock
  (the agent gone, an unsupported request) is not served;
- output: ``--json``/``--jsonl`` and the plain tab-separated lines are written here (the same
  bytes as the Typer command; tests/test_fastcli.py compares them); a rich table on a TTY is
  drawn by the Typer command's own ``render_hits``; plain text containing an escape character
  (which click would strip) and a stdout that is not UTF-8 are not served.

Not served means :func:`run` returns None *before printing anything*, and the caller runs the
Typer application on the same argv. ``MEMCTL_NO_FAST_PATH=1`` turns the fast path off.
Stdlib + the agent client only: a test checks that serving a recall loads no typer/click/rich.
"""

from __future__ import annotations

import os
import sys
from typing import Any

NO_FAST_ENV = "MEMCTL_NO_FAST_PATH"

# root options that take a value, and the recall command's: option -> parameter name
_ROOT_VALUES = {
    "--vault": "vault",
    "--passphrase-file": "passphrase_file",
    "--passphrase-command": "passphrase_command",
    "--key-file": "key_file",
}
_RECALL_VALUES = {
    **_ROOT_VALUES,
    "--mode": "mode",
    "--limit": "limit",
    "-l": "limit",
    "--namespace": "namespace",
    "-n": "namespace",
    "--tag": "tag",
    "-t": "tag",
    "--kind": "kind",
    "--source": "source",
    "--since": "since",
    "--until": "until",
    "--min-trust": "min_trust",
}
_MULTIPLE = frozenset({"namespace", "tag", "kind"})
_PATHS = frozenset({"vault", "passphrase_file", "key_file"})
_RECALL_FLAGS = {
    "--explain": ("explain", True),
    "--no-explain": ("explain", False),
    "--json": ("json_out", True),
    "--jsonl": ("jsonl", True),
}
_ROOT_FLAGS = {"--quiet": ("quiet", True), "-q": ("quiet", True)}


class _NotServed(Exception):
    """Raised where the Typer command would unlock the vault locally: let it do so."""


def parse(argv: list[str]) -> dict[str, Any] | None:
    """``memctl [ROOT OPTIONS] recall QUERY [OPTIONS]`` as the recall command's parameters.

    None if argv is anything else, or anything click might read differently.
    """
    root: dict[str, Any] = {"vault": None, "quiet": False}
    i = 0
    while i < len(argv) and argv[i] != "recall":
        i = _option(argv, i, _ROOT_VALUES, _ROOT_FLAGS, root)
        if i < 0:
            return None
    if i >= len(argv):
        return None
    opts: dict[str, Any] = {
        "query": None,
        "mode": None,
        "limit": 10,
        "namespace": None,
        "tag": None,
        "kind": None,
        "source": None,
        "since": None,
        "until": None,
        "min_trust": None,
        "explain": False,
        "vault": None,
        "json_out": False,
        "jsonl": False,
    }
    positional: list[str] = []
    i += 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional.extend(argv[i + 1 :])
            break
        if not arg.startswith("-"):
            positional.append(arg)
            i += 1
            continue
        i = _option(argv, i, _RECALL_VALUES, _RECALL_FLAGS, opts)
        if i < 0:
            return None
    if len(positional) != 1:
        return None
    opts["query"] = positional[0]
    limit = opts["limit"]
    if isinstance(limit, str):
        if not (limit.isascii() and limit.isdigit()):
            return None
        opts["limit"] = int(limit)
    opts["vault"] = opts["vault"] or root["vault"]
    opts["quiet"] = root["quiet"]
    return opts


def _option(
    argv: list[str],
    i: int,
    values: dict[str, str],
    flags: dict[str, tuple[str, bool]],
    into: dict[str, Any],
) -> int:
    """Read the option at argv[i] into ``into``; the next index, or -1 if not understood."""
    arg = argv[i]
    if arg in flags:
        name, flag = flags[arg]
        into[name] = flag
        return i + 1
    opt, eq, attached = arg.partition("=")
    if eq and opt.startswith("--") and opt in values:
        value, nxt = attached, i + 1
    elif arg in values and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        opt, value, nxt = arg, argv[i + 1], i + 2
    else:
        return -1
    name = values[opt]
    if name in _PATHS:
        if not value:
            return -1
        from pathlib import Path

        into[name] = Path(value)
    elif name in _MULTIPLE:
        into[name] = [*(into.get(name) or []), value]
    else:
        into[name] = value
    return nxt


def run(argv: list[str]) -> int | None:
    """Serve ``memctl recall`` through the agent: the exit code, or None (nothing printed)."""
    if os.environ.get(NO_FAST_ENV, "") not in ("", "0"):
        return None
    opts = parse(argv)
    if opts is None:
        return None
    tty = _isatty()
    table = tty and not (opts["json_out"] or opts["jsonl"])
    if not (table or opts["json_out"] or opts["jsonl"]) and not _utf8_stdout():
        return None
    from memctl.errors import ExitCode, MemctlError

    try:
        hits = _recall(opts)
        if hits is None:
            return None
        if table:
            from memctl.cli import common, recall_cmd

            common.reset_state().quiet = opts["quiet"]
            recall_cmd.render_hits(hits, json_out=False, jsonl=False, explain=opts["explain"])
            return 0
        out = _render(hits, opts)
        if out is None:
            return None
        for chunk in out:
            sys.stdout.write(chunk)
            if not (opts["json_out"] or opts["jsonl"]):
                sys.stdout.flush()  # click.echo flushes every line
    except _NotServed:
        return None
    except MemctlError as exc:
        sys.stderr.write(f"memctl: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"memctl: hint: {exc.hint}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("memctl: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `memctl recall … | head`: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def _recall(opts: dict[str, Any]) -> list[dict[str, Any]] | None:
    from memctl.agent.client import connect_vault

    def local() -> Any:
        raise _NotServed

    proxy = connect_vault(opts["vault"], actor="cli", open_local=local)
    if proxy is None:
        return None
    with proxy as v:
        return v.recall(
            opts["query"],
            mode=opts["mode"],
            limit=opts["limit"],
            explain=opts["explain"],
            namespace=opts["namespace"],
            tags=opts["tag"],
            kind=opts["kind"],
            source=opts["source"],
            since=opts["since"],
            until=opts["until"],
            min_trust=opts["min_trust"],
        )


def _render(hits: list[dict[str, Any]], opts: dict[str, Any]) -> list[str] | None:
    """What recall_cmd.render_hits writes to stdout off a TTY (None: not sure, not served)."""
    import json

    if opts["json_out"]:
        return [json.dumps(hits, ensure_ascii=False, indent=2, default=str) + "\n"]
    if opts["jsonl"]:
        return [json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in hits]
    if not hits:
        if not opts["quiet"]:
            sys.stderr.write("no matches\n")
        return []
    lines = []
    for h in hits:
        line = f"{h['id']}\t{h['score']:.4g}\t{h['namespace']}\t{_one_line(h['text'], 200)}"
        if opts["explain"]:
            line += "\t" + _explain(h)
        if "\x1b" in line:
            return None  # click.echo strips ANSI escapes off a TTY: let it
        lines.append(line + "\n")
    return lines


def _one_line(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _explain(hit: dict[str, Any]) -> str:
    parts = []
    for name, comp in (hit.get("explain") or {}).items():
        if isinstance(comp, dict):
            rank = comp.get("rank")
            score = comp.get("score")
            parts.append(
                f"{name}: #{rank if rank is not None else '-'} {score:.3f}"
                if isinstance(score, float)
                else f"{name}: {comp}"
            )
        else:
            parts.append(f"{name}: {comp}")
    return "; ".join(parts)


def _isatty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _utf8_stdout() -> bool:
    import codecs

    encoding = getattr(sys.stdout, "encoding", None)
    try:
        return bool(encoding) and codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False
