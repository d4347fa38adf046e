"""Concurrency: four kinds of writer and reader on one vault at once, nothing lost or doubled.

At the same time, for a fixed number of operations:

- **cron**: a shell loop running ``memctl ingest --job nightly FOLDER``, new files appearing in
  the folder between runs (each run incremental, as from crontab);
- **API**: ``tests/crash_child.py`` calling ``Vault.ingest_many`` in a loop (new records and
  updates of shared locators), printing an ack after each batch;
- **MCP**: ``memctl mcp`` driven by the official SDK client, ``remember`` then ``recall``;
- **shell**: a bash loop of ``memctl recall`` / ``memctl erase --yes`` over seeded records.

Then: every exit code 0 (an erase may report 13, "physically pending", finished later); no
"database is locked", busy error or traceback on any stderr; every acknowledged write there
exactly once with its text; every erased record gone — and gone from the file, by the page
oracle; nothing half-present; ``audit_verify()`` passes (journal and database agree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import memctl
from memctl.errors import ExitCode

from .conftest import PASSPHRASE
from .consistency import MEMCTL, assert_clean_stderr, check_whole, child_env
from .crash_child import batch_items
from .oracle import scan

CHILD = Path(__file__).with_name("crash_child.py")

CRON_SCRIPT = r"""
set -u
dir=$1; staged=$2; runs=$3
for r in $(seq 1 "$runs"); do
  cp "$staged/r$r/"* "$dir/"
  "$MEMCTL_BIN" ingest --job nightly "$dir" --json > "$OUT/cron.$r.json" 2>> "$OUT/cron.err"
  echo "$r $?" >> "$OUT/cron.rc"
done
"""

SHELL_SCRIPT = r"""
set -u
for k in "$@"; do
  "$MEMCTL_BIN" recall "zqseed${k}x" --json --mode keyword > "$OUT/recall.$k.json" 2>> "$OUT/shell.err"
  echo "recall $k $?" >> "$OUT/shell.rc"
  "$MEMCTL_BIN" erase --query "zqseed${k}x" --yes --json > "$OUT/erase.$k.json" 2>> "$OUT/shell.err"
  echo "erase $k $?" >> "$OUT/shell.rc"
done
"""


def run_mix(
    tmp_path: Path,
    *,
    cron_runs: int,
    cron_files: int,
    api_batches: int,
    mcp_calls: int,
    erases: int,
) -> dict[str, int]:
    vault_path = tmp_path / "vault"
    memctl.init_vault(
        vault_path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    os.chmod(passfile, 0o600)
    out = tmp_path / "out"
    out.mkdir()
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        seeded = {
            k: v.ingest(f"seeded record {k} zqseed{k}x", tags=["seed"]) for k in range(erases + 2)
        }
    folder, staged = tmp_path / "notes", tmp_path / "staged"
    folder.mkdir()
    for r in range(1, cron_runs + 1):
        (staged / f"r{r}").mkdir(parents=True)
        for f in range(cron_files):
            (staged / f"r{r}" / f"n{r}-{f}.txt").write_text(f"cron note {r} {f} zqcron{r}x{f}\n")

    env = child_env(vault_path, passfile, OUT=str(out), MEMCTL_BIN=str(MEMCTL))
    procs: dict[str, subprocess.Popen[str]] = {
        "cron": subprocess.Popen(
            ["bash", "-c", CRON_SCRIPT, "cron", str(folder), str(staged), str(cron_runs)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "api": subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                str(vault_path),
                str(passfile),
                "5",
                "--batches",
                str(api_batches),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "shell": subprocess.Popen(
            ["bash", "-c", SHELL_SCRIPT, "shell", *map(str, range(erases))],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    }
    outputs: dict[str, tuple[str, str]] = {}

    def drain(name: str, proc: subprocess.Popen[str]) -> None:
        outputs[name] = proc.communicate(timeout=600)

    drains = [threading.Thread(target=drain, args=item) for item in procs.items()]
    for t in drains:
        t.start()
    remembered, mcp_err = mcp_session(vault_path, env, mcp_calls, tmp_path / "mcp.err")
    for t in drains:
        t.join(660)

    # -- every process finished cleanly -----------------------------------------------------
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outputs[name][1][-3000:])
        assert_clean_stderr(outputs[name][1], f"{name} stderr")
    for log in ("cron.err", "shell.err"):
        text = (out / log).read_text() if (out / log).exists() else ""
        assert_clean_stderr(text, log)
        assert "busy" not in text.lower(), text
    assert_clean_stderr(mcp_err, "mcp server stderr")
    cron_rc = (out / "cron.rc").read_text().split("\n")
    assert [line.split()[1] for line in cron_rc if line] == ["0"] * cron_runs, cron_rc
    shell_rc = [line.split() for line in (out / "shell.rc").read_text().splitlines()]
    assert len(shell_rc) == 2 * erases
    pending = 0
    for op, k, rc in shell_rc:
        if op == "erase" and int(rc) == ExitCode.INCOMPLETE:
            pending += 1  # physically pending: a reader held the WAL; finished later
        else:
            assert int(rc) == 0, (op, k, rc, (out / "shell.err").read_text()[-2000:])
    for k in range(erases):
        hits = json.loads((out / f"recall.{k}.json").read_text())
        assert [h["id"] for h in hits] == [seeded[k]], hits
        receipt = json.loads((out / f"erase.{k}.json").read_text())
        assert receipt["erased"] == [seeded[k]], receipt
    acks = [line.split() for line in outputs["api"][0].splitlines() if line.startswith("ack")]
    assert len(acks) == api_batches

    # -- the vault holds exactly what was acknowledged --------------------------------------
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:  # finishes pending erases
        whole = check_whole(v)
        rows = v.conn.execute("SELECT id, body, source, locator FROM records").fetchall()
        by_token: dict[str, list[str]] = {}
        for rid, body, _s, _l in rows:
            for token in body.split():
                if token.startswith("zq"):
                    by_token.setdefault(token, []).append(rid)
        doubled = {t: ids for t, ids in by_token.items() if len(ids) > 1}
        assert not doubled, doubled
        expected: dict[str, str] = {}
        for k, rid in seeded.items():
            if k >= erases:
                expected[f"zqseed{k}x"] = rid
        for r in range(1, cron_runs + 1):
            for f in range(cron_files):
                assert f"zqcron{r}x{f}" in by_token, f"cron file {r}/{f} lost"
                expected[f"zqcron{r}x{f}"] = by_token[f"zqcron{r}x{f}"][0]
        latest: dict[tuple[str, str], tuple[str, str]] = {}
        for _, b, *ids in acks:
            for item, rid in zip(batch_items(5, int(b), 4), ids, strict=True):
                latest[(item["source"], item["locator"])] = (rid, item["text"])
        current = {(s, loc): (rid, body) for rid, body, s, loc in rows}
        for key, (rid, text) in latest.items():
            assert current.get(key) == (rid, text), f"API write {key} lost or changed"
            expected[text.split()[-1]] = rid
        for rid, text in remembered.items():
            assert v.get(rid)["text"] == text
            expected[text.split()[-1]] = rid
        live = {t: ids[0] for t, ids in by_token.items()}
        assert live == expected, {
            "missing": expected.keys() - live,
            "extra": live.keys() - expected,
        }
        assert whole["records"] == len(expected)
        report = v.audit_verify()
        assert report["ok"], report["problems"]
        key = v.keys.sqlcipher
    hits = scan(vault_path, key, [f"zqseed{k}x" for k in range(erases)]).hits
    assert hits == [], hits[:5]
    return {
        "cron runs": cron_runs,
        "cron files": cron_runs * cron_files,
        "api batches": api_batches,
        "mcp remember": mcp_calls,
        "mcp recall": mcp_calls // 5,
        "shell commands": 2 * erases,
        "erases physically pending then finished": pending,
        "operations": cron_runs + api_batches + mcp_calls + mcp_calls // 5 + 2 * erases,
        "records at the end": len(expected),
    }


def mcp_session(
    vault_path: Path, env: dict[str, str], calls: int, errlog: Path
) -> tuple[dict, str]:
    """``remember`` ``calls`` times (and a recall every fifth) through the SDK stdio client."""
    import anyio
    import mcp_types as types
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=str(MEMCTL), args=["mcp", "--vault", str(vault_path)], env=env
    )
    remembered: dict[str, str] = {}

    async def main() -> None:
        with open(errlog, "w") as err:
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(
                    read, write, client_info=types.Implementation(name="stress", version="1")
                ) as session,
            ):
                await session.initialize()
                for i in range(calls):
                    text = f"agent memory {i} zqmcp{i}"
                    result = await session.call_tool("remember", {"text": text})
                    assert not result.is_error, result.content[0].text
                    stored = result.structured_content
                    assert stored["status"] == "stored", stored
                    remembered[stored["id"]] = text
                    if i % 5 == 4:
                        result = await session.call_tool(
                            "recall", {"query": f"zqmcp{i}", "mode": "keyword"}
                        )
                        assert not result.is_error, result.content[0].text
                        assert stored["id"] in {h["id"] for h in result.structured_content["hits"]}

    anyio.run(main)
    return remembered, errlog.read_text()


def report(figures: dict[str, Any]) -> None:
    sys.stderr.write("\nconcurrency figures: " + json.dumps(figures) + "\n")


def test_four_processes_at_once(tmp_path: Path) -> None:
    figures = run_mix(tmp_path, cron_runs=3, cron_files=4, api_batches=15, mcp_calls=15, erases=4)
    report(figures)


@pytest.mark.slow
def test_four_processes_at_once_long(tmp_path: Path) -> None:
    figures = run_mix(
        tmp_path, cron_runs=8, cron_files=10, api_batches=150, mcp_calls=120, erases=20
    )
    report(figures)
