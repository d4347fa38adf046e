"""Time ``memctl mcp`` as a client sees it: spawn → ``tools/list``, and ``recall`` round trips.

Drives a real server subprocess with the MCP SDK's own stdio client, so the figures include
JSON-RPC framing, the pipe and the SDK on both sides. Used by ``memctl bench`` and the tests.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MIN_QUERIES = 200


def server_command() -> list[str]:
    """How to start memctl from this interpreter: its console script, else ``python -c``."""
    script = Path(sys.executable).with_name("memctl")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'memctl'; from memctl.cli import main; main()",
    ]


def bench_mcp_recall(
    vault_path: str | Path,
    env: dict[str, str] | None,
    queries: Sequence[str],
    *,
    rounds: int = MIN_QUERIES,
    limit: int = 10,
    extra_args: Sequence[str] = (),
    server_log: str | Path | None = None,
) -> dict[str, Any]:
    """Spawn ``memctl mcp --vault VAULT`` and time ``rounds`` (at least 200) recall calls.

    ``env`` is added to the SDK's safe default environment (pass ``MEMCTL_PASSPHRASE_FILE`` or
    ``MEMCTL_KEY_FILE`` here). Queries are cycled. The first call, which unlocks the vault, is
    timed separately and not counted. The server's stderr goes to ``server_log`` (default:
    discarded). Returns milliseconds.
    """
    import anyio

    if not queries:
        raise ValueError("bench_mcp_recall needs at least one query")
    rounds = max(rounds, MIN_QUERIES)
    args = [*server_command()[1:], "mcp", "--vault", str(vault_path), *extra_args]
    log = str(server_log) if server_log else os.devnull
    return anyio.run(
        _bench, server_command()[0], args, dict(env or {}), list(queries), rounds, limit, log
    )


@contextlib.asynccontextmanager
async def _open_log(path: str) -> Any:
    with open(path, "a") as fh:
        yield fh


async def _bench(
    command: str,
    args: list[str],
    env: dict[str, str],
    queries: list[str],
    rounds: int,
    limit: int,
    log: str,
) -> dict[str, Any]:
    import mcp_types as types
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=command, args=args, env=env)
    info = types.Implementation(name="memctl-bench", version="1")
    errors = 0
    times: list[float] = []
    start = time.perf_counter()
    async with (
        _open_log(log) as errlog,
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write, client_info=info) as session,
    ):
        await session.initialize()
        await session.list_tools()
        tools_list_s = time.perf_counter() - start
        t0 = time.perf_counter()
        first = await session.call_tool("recall", {"query": queries[0], "limit": limit})
        first_call_s = time.perf_counter() - t0
        if first.is_error:
            text = first.content[0].text if first.content else "?"  # type: ignore[union-attr]
            raise RuntimeError(f"recall over MCP failed: {text}")
        for i in range(rounds):
            query = queries[i % len(queries)]
            t0 = time.perf_counter()
            result = await session.call_tool("recall", {"query": query, "limit": limit})
            times.append(time.perf_counter() - t0)
            errors += bool(result.is_error)
    times.sort()
    ms = [t * 1000 for t in times]
    return {
        "mcp_recall_p50_ms": round(statistics.median(ms), 3),
        "mcp_recall_p95_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 3),
        "mcp_recall_mean_ms": round(statistics.fmean(ms), 3),
        "mcp_recall_n": len(ms),
        "mcp_recall_errors": errors,
        "mcp_spawn_to_tools_list_ms": round(tools_list_s * 1000, 1),
        "mcp_first_recall_ms": round(first_call_s * 1000, 1),
    }
