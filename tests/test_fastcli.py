"""The CLI fast path (memctl/cli/fast.py): `memctl recall` through the agent without typer.

Whatever it serves must be exactly what the Typer command prints (stdout, stderr, exit code);
whatever it is not sure of it must leave, untouched, to the Typer command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import memctl
from memctl.agent import client as client_mod
from memctl.agent.client import running_agents
from memctl.agent.protocol import AgentGone
from memctl.cli import app, common, fast, main

from .conftest import PASSPHRASE
from .test_agent import NOTES, serve

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
LONG_NOTE = {  # non-ASCII, several whitespace runs, longer than the plain line's 200 characters
    "text": "Zürich café:\n\ttulip  market " + "— stalls “open” late " * 12,
    "title": "Tulip market",
    "tags": ["travel"],
}
ANSI_NOTE = {"text": "A crimson \x1b[1mrose\x1b[0m variety", "namespace": "colour"}


def _served(path: Path, monkeypatch: pytest.MonkeyPatch, notes: list[dict]) -> Iterator[Path]:
    """A vault with an embedding model (hashing test embedder), served by an agent."""
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    monkeypatch.setenv("MEMCTL_VAULT", str(path))
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        v.ingest_many(notes)
    with serve(path):
        yield path


@pytest.fixture
def agent_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from _served(tmp_path / "vault", monkeypatch, [*NOTES, LONG_NOTE])


@pytest.fixture
def ansi_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The same notes and one whose text holds terminal escape sequences."""
    yield from _served(tmp_path / "vault", monkeypatch, [*NOTES, LONG_NOTE, ANSI_NOTE])


def fast_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str, str]:
    code = fast.run(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def typer_run(args: list[str]) -> tuple[int, str, str]:
    r = runner.invoke(app, args, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


SERVED = [
    ["recall", "tulip", "--mode", "keyword"],
    ["recall", "tulip", "--mode", "keyword", "--explain"],
    ["recall", "tulip", "--mode", "keyword", "--jsonl", "-l", "1"],
    ["recall", "tulip"],
    ["recall", "tulip", "--json"],
    ["recall", "tulip", "--jsonl"],
    ["recall", "tulip", "--explain"],
    ["recall", "tulip", "--mode", "keyword", "--explain", "--json"],
    ["recall", "tulip", "--mode", "vector", "-l", "1"],
    ["recall", "tulip", "--mode=hybrid", "--limit=3", "--jsonl", "--explain"],
    ["recall", "passport dentist", "-n", "default", "--namespace", "health", "--json"],
    ["recall", "tulip", "-t", "garden", "--tag", "travel"],
    ["recall", "tulip", "--kind", "note", "--since", "3650d", "--min-trust", "agent"],
    ["recall", "tulip", "--until", "2000-01-01"],  # no matches: a message on stderr
    ["-q", "recall", "tulip", "--source", "nowhere:"],  # ... unless --quiet
    ["--vault", "{vault}", "recall", "--json", "tulip", "--explain", "--no-explain"],
    ["recall", "--", "-tulip"],
    ["recall", "tulip", "--passphrase-file", "/nonexistent", "--key-file", "/nonexistent"],
    # errors come from the agent: same message, same exit code
    ["recall", "tulip", "--mode", "bogus"],
    ["recall", ""],
    ["recall", "tulip", "-l", "0"],
    ["recall", "tulip", "--since", "not a date"],
    ["recall", "tulip", "--min-trust", "nobody"],
    ["recall", "tulip", "--vault", "{vault}", "--mode", ""],
]


@pytest.mark.parametrize("args", SERVED, ids=lambda a: " ".join(a))
def test_fast_path_prints_what_typer_prints(
    agent_vault: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    args = [a.replace("{vault}", str(agent_vault)) for a in args]
    code, out, err = fast_run(args, capsys)
    assert code is not None, "not served"
    assert (code, out, err) == typer_run(args)


def test_served_output_is_real(agent_vault: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(The comparisons above are not all empty: the fast path finds the notes.)"""
    code, out, _ = fast_run(["recall", "tulip", "--mode", "keyword", "--json"], capsys)
    assert code == 0
    assert any("Plant the tulip bulbs" in h["text"] for h in json.loads(out))
    code, out, _ = fast_run(["recall", "tulip", "--mode", "keyword"], capsys)
    assert code == 0 and "\tdefault\tPlant the tulip bulbs in October" in out
    assert "\tZürich café: tulip market — stalls “open” late" in out and "…\n" in out
    code, _, err = fast_run(["recall", "tulip", "--mode", "bogus"], capsys)
    assert code == 2 and err.startswith("memctl: error: ")


NOT_SERVED = [
    ["recall", "tulip", "--help"],
    ["recall", "-h"],
    ["recall"],
    ["recall", "tulip", "bulbs"],
    ["recall", "tulip", "--bogus"],
    ["recall", "tulip", "-l", "x"],
    ["recall", "tulip", "-l", " 5"],
    ["recall", "tulip", "-l5"],
    ["recall", "tulip", "-l", "-1"],
    ["recall", "tulip", "-n"],
    ["recall", "tulip", "--json=1"],
    ["recall", "tulip", "--vault="],
    ["recall", "tulip", "-"],
    ["--version", "recall", "tulip"],
    ["--json", "recall", "tulip"],
    ["ingest", "--text", "recall"],
    ["status"],
]


@pytest.mark.parametrize("args", NOT_SERVED, ids=lambda a: " ".join(a))
def test_anything_else_is_left_to_typer(
    agent_vault: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert fast_run(args, capsys) == (None, "", "")


def test_escapes_plain_left_to_typer_json_served(
    ansi_vault: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """click.echo strips escape sequences off a TTY: plain text holding one is left to it."""
    for mode in ("keyword", "hybrid"):
        assert fast_run(["recall", "crimson", "--mode", mode], capsys) == (None, "", "")
        code, out, _ = typer_run(["recall", "crimson", "--mode", mode])
        assert code == 0 and "A crimson rose variety" in out and "\x1b" not in out
        args = ["recall", "crimson", "--mode", mode, "--json"]
        code, out, err = fast_run(args, capsys)
        assert code == 0 and "\x1b[1mrose" in json.loads(out)[0]["text"]
        assert (code, out, err) == typer_run(args)


def test_no_agent_or_agent_off_is_left_to_typer(
    agent_vault: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    other = tmp_path / "other"
    memctl.init_vault(other, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1)
    assert fast_run(["recall", "tulip", "--vault", str(other)], capsys) == (None, "", "")
    monkeypatch.setenv("MEMCTL_NO_AGENT", "1")
    assert fast_run(["recall", "tulip"], capsys) == (None, "", "")
    monkeypatch.delenv("MEMCTL_NO_AGENT")
    monkeypatch.setenv("MEMCTL_NO_FAST_PATH", "1")
    assert fast_run(["recall", "tulip"], capsys) == (None, "", "")


def test_agent_gone_is_left_to_typer(
    agent_vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the Typer command would unlock locally (agent gone), the fast path steps aside."""

    def gone(self, req):
        raise AgentGone("the agent went away", sent=True)

    monkeypatch.setattr(client_mod.AgentClient, "roundtrip", gone)
    assert fast_run(["recall", "tulip", "--json"], capsys) == (None, "", "")


def test_tty_table_is_typers_own(
    agent_vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "_isatty", lambda: True)
    monkeypatch.setattr(common, "stdout_is_tty", lambda: True)
    monkeypatch.setenv("COLUMNS", "120")
    args = ["recall", "tulip", "--mode", "keyword", "--explain"]
    code, out, err = fast_run(args, capsys)
    assert code == 0 and "┏" in out and "Plant" in out
    assert (code, out, err) == typer_run(args)


def test_non_utf8_stdout_is_left_to_typer(
    agent_vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast, "_utf8_stdout", lambda: False)
    assert fast_run(["recall", "tulip"], capsys) == (None, "", "")
    code, out, _ = fast_run(["recall", "tulip", "--mode", "keyword", "--json"], capsys)
    assert code == 0 and json.loads(out)


def test_main_falls_back_with_typers_exit_code(
    agent_vault: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["memctl", "recall", "tulip", "--bogus"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "No such option '--bogus'" in capsys.readouterr().err


PROBE = """
import json, sys
from memctl.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(m for m in ("typer", "click", "rich") if m in sys.modules)]),
      file=sys.stderr)
"""


def _entry(args: list[str], **env: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "memctl.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["recall", "tulip", "--mode", "keyword"],
        ["recall", "tulip", "--mode", "keyword", "--jsonl", "--explain", "-l", "2"],
    ],
)
def test_entry_point_fast_equals_slow(agent_vault: Path, args: list[str]) -> None:
    """The real console entry point: served without typer/click/rich, same bytes as Typer."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT
    )
    code, loaded = json.loads(probe.stderr.strip().splitlines()[-1])
    assert (code, loaded) == (0, [])
    fast_result = _entry(args)
    assert fast_result[0] == 0 and fast_result[1]
    assert fast_result == _entry(args, MEMCTL_NO_FAST_PATH="1")
    assert fast_result[1] == probe.stdout


def test_entry_point_without_agent(vault_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))
    assert running_agents() == []
    code, out, err = _entry(["recall", "tulip"])
    assert (code, out) == (5, "")  # ExitCode.LOCKED, from the Typer command
    assert err.startswith("memctl: error: ")


# -- the slow path builds only the subcommand it runs -------------------------------------------
def _help_argvs() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    argvs: list[list[str]] = [["--help"], []]
    for name, cmd in root.commands.items():
        argvs.append([name, "--help"])
        for sub in getattr(cmd, "commands", {}):
            argvs.append([name, sub, "--help"])
    return argvs


def test_lazy_group_prints_what_typer_prints() -> None:
    """Every help page, and the usage errors, from the lazy root == from Typer's full build."""
    import click.testing
    import typer.main

    from memctl.cli import application

    click_runner = click.testing.CliRunner()
    argvs = [
        *_help_argvs(),
        ["bogus"],
        ["recal", "tulip"],
        ["key"],
        ["key", "bogus"],
        ["recall"],
        ["recall", "tulip", "--bogus"],
        ["--bogus"],
        ["--version"],
    ]
    assert len(argvs) > 40
    for argv in argvs:
        lazy = click_runner.invoke(application.command(), argv, prog_name="memctl")
        full = click_runner.invoke(typer.main.get_command(app), argv, prog_name="memctl")
        assert (lazy.exit_code, lazy.stdout, lazy.stderr) == (
            full.exit_code,
            full.stdout,
            full.stderr,
        ), argv
        assert lazy.stdout or lazy.stderr


def test_lazy_group_builds_only_what_runs() -> None:
    import click

    from memctl.cli import application

    root = application.command()
    assert isinstance(root, application.LazyGroup)
    ctx = click.Context(root, info_name="memctl")
    root.get_help(ctx)
    assert root.commands._built == {}  # the listing came from stand-ins
    assert root.get_command(ctx, "recall").name == "recall"
    assert set(root.commands._built) == {"recall"}
    assert root.list_commands(ctx)[:3] == ["init", "passwd", "status"]
    assert root.get_command(ctx, "bogus") is None


def test_lazy_group_edge_cases_match_typer() -> None:
    """Hidden and deprecated commands, short_help, a plugin-style group, an unnamed sub-app."""
    import click.testing
    import typer.main

    from memctl.cli import application

    def build(*, unnamed: bool) -> typer.Typer:
        t = typer.Typer(cls=application.LazyGroup, no_args_is_help=True, rich_markup_mode=None)

        @t.callback()
        def root(ctx: typer.Context) -> None:
            """The root."""

        t.command("shown", short_help="Short.")(lambda: typer.echo("shown ran"))
        t.command("secret", hidden=True)(lambda: typer.echo("secret ran"))
        t.command("old", deprecated=True, help="Old one.\n\nMore text.")(lambda: None)
        hello = typer.Typer(help="Say things.", rich_markup_mode=None)
        hello.command("say")(lambda: typer.echo("hello from a group"))
        t.add_typer(hello, **({} if unnamed else {"name": "hello"}))
        return t

    click_runner = click.testing.CliRunner()
    for unnamed in (False, True):
        t = build(unnamed=unnamed)
        lazy_root = application.command(t)
        assert isinstance(lazy_root.commands, application._LazyCommands) is not unnamed
        for argv in (["--help"], ["shown"], ["secret"], ["old"], ["hello", "say"], ["say"]):
            lazy = click_runner.invoke(application.command(t), argv, prog_name="p")
            full = click_runner.invoke(typer.main.get_command(t), argv, prog_name="p")
            assert (lazy.exit_code, lazy.output) == (full.exit_code, full.output), argv
    assert "hello from a group" in click_runner.invoke(lazy_root, ["say"]).output
