"""Cron jobs: actor and trust, the per-job lock (overlapping runs), --quiet, key files, examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memctl.cli import app
from memctl.errors import ExitCode, UsageError, VaultBusy
from memctl.ingest.pipeline import job_actor, job_lock

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def env(vault_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    return vault_path


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text("# Cron\n\nwritten by the nightly job\n")
    return root


def test_job_runs_as_cron_actor_with_import_trust(env: Path, notes: Path) -> None:
    r = cli("ingest", str(notes), "--job", "nightly", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["added"] == 1
    (hit,) = json.loads(cli("recall", "nightly", "--json").stdout)
    assert (hit["actor"], hit["trust_name"]) == ("cron:nightly", "import")
    assert (env / ".job-nightly.lock").exists()


def test_job_names_are_checked() -> None:
    assert job_actor("notes-2024.v1") == "cron:notes-2024.v1"
    for bad in ("", "-x", "a b", "x/y", "a" * 65, "é"):
        with pytest.raises(UsageError):
            job_actor(bad)


def test_overlapping_run_of_the_same_job_exits_busy(env: Path, notes: Path) -> None:
    with job_lock(env, "nightly"):
        r = cli("ingest", str(notes), "--job", "nightly", "--quiet")
        assert r.exit_code == ExitCode.BUSY == 6
        assert "job 'nightly' is already running" in r.stderr
        assert cli("ingest", str(notes), "--job", "other", "-q").exit_code == 0  # other jobs run
        with pytest.raises(VaultBusy), job_lock(env, "nightly"):
            pass
    assert json.loads(cli("ingest", str(notes), "--job", "nightly", "--json").stdout)["added"] == 0


def test_overlap_with_a_real_second_process(env: Path, notes: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from memctl.ingest.pipeline import job_lock\n"
            "with job_lock(Path(sys.argv[1]), 'sync'):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n",
            str(env),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r = cli("ingest", str(notes), "--job", "sync")
        assert r.exit_code == ExitCode.BUSY and "already running" in r.stderr
        assert json.loads(cli("list", "--json").stdout) == []  # the refused run changed nothing
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert cli("ingest", str(notes), "--job", "sync", "-q").exit_code == 0


def test_quiet_prints_nothing_on_success(env: Path, notes: Path) -> None:
    for args in (
        ("ingest", str(notes), "--job", "q", "--quiet"),
        ("--quiet", "ingest", str(notes), "--job", "q"),
        ("ingest", "--text", "quiet text", "-q"),
    ):
        r = cli(*args)
        assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")


def test_job_unlocks_with_a_key_file(
    env: Path, notes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "cron.key"
    assert cli("key", "add", "--key-file", str(key)).exit_code == 0
    monkeypatch.delenv("MEMCTL_PASSPHRASE_FILE")
    monkeypatch.setenv("MEMCTL_KEY_FILE", str(key))
    r = cli("ingest", str(notes), "--job", "k", "--quiet")
    assert (r.exit_code, r.stderr) == (0, "")
    monkeypatch.delenv("MEMCTL_KEY_FILE")
    assert cli("ingest", str(notes), "--job", "k", "-q").exit_code == ExitCode.LOCKED


def test_cron_example_prints_crontab_and_systemd_units(tmp_path: Path) -> None:
    key = tmp_path / "my jobs" / "n.key"
    r = cli(
        "--vault",
        str(tmp_path / "v"),
        "cron",
        "example",
        str(tmp_path / "notes"),
        "--job",
        "notes",
        "--every",
        "30",
        "--key-file",
        str(key),
    )
    assert r.exit_code == 0
    out = r.stdout
    cron_line = next(line for line in out.splitlines() if line.startswith("*/30 * * * *"))
    assert f"MEMCTL_VAULT={tmp_path / 'v'}" in cron_line
    assert f"MEMCTL_KEY_FILE='{key}'" in cron_line  # quoted: the path has a space
    assert "ingest --job notes --quiet" in cron_line and str(tmp_path / "notes") in cron_line
    for needle in (
        "[Service]",
        "Type=oneshot",
        f'Environment="MEMCTL_KEY_FILE={key}"',
        "SuccessExitStatus=6",
        "[Timer]",
        "OnCalendar=*:0/30",
        "Persistent=true",
        "WantedBy=timers.target",
        "memctl key add --key-file",
        "systemctl --user enable --now memctl-notes.timer",
    ):
        assert needle in out, needle
    hourly = cli("cron", "example", "--every", "120").stdout
    assert "0 */2 * * *" in hourly and "OnCalendar=*-*-* 0/2:00:00" in hourly
    assert cli("cron", "example", "--job", "bad name").exit_code == ExitCode.USAGE
