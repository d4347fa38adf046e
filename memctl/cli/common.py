"""Shared CLI plumbing: unlock options, opening the vault, output, errors → exit codes.

Commands stay thin: parse options, call one library function, render with these helpers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from memctl.errors import ExitCode, MemctlError

VaultOpt = Annotated[
    Path | None,
    typer.Option("--vault", help="Vault directory [env: MEMCTL_VAULT].", show_default=False),
]
PassFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the passphrase from this file [env: MEMCTL_PASSPHRASE_FILE].",
    ),
]
PassCmdOpt = Annotated[
    str | None,
    typer.Option("--passphrase-command", help="Run this command; its output is the passphrase."),
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="Unlock with a key file [env: MEMCTL_KEY_FILE]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class State:
    """Options given before the command (``memctl --vault V recall …``)."""

    def __init__(self) -> None:
        self.vault: Path | None = None
        self.passphrase_file: Path | None = None
        self.passphrase_command: str | None = None
        self.key_file: Path | None = None
        self.quiet = False


_STATE = State()


def state() -> State:
    """This invocation's root options (reset by the root callback on every invocation)."""
    return _STATE


def reset_state() -> State:
    global _STATE
    _STATE = State()
    return _STATE


def credentials(
    passphrase_file: Path | None = None,
    passphrase_command: str | None = None,
    key_file: Path | None = None,
) -> Any:
    from memctl.vault.unlock import Credentials

    st = state()
    return Credentials.from_env(
        passphrase_file=passphrase_file or st.passphrase_file,
        passphrase_command=passphrase_command or st.passphrase_command,
        key_file=key_file or st.key_file,
        interactive=True,
    )


def open_vault(
    vault: Path | None = None,
    passphrase_file: Path | None = None,
    passphrase_command: str | None = None,
    key_file: Path | None = None,
    *,
    actor: str = "cli",
    use_agent: bool = True,
) -> Any:
    """The vault, through its agent when one runs (``memctl unlock``), else unlocked here.

    Through the agent, the result is a :class:`~memctl.agent.client.VaultProxy` with the
    Vault's methods; what the agent does not serve (or cannot, because it died) is done on a
    Vault unlocked locally with the usual credentials, on first use. ``use_agent=False`` for
    commands that must prove the real secret (passwd, key add/remove). ``MEMCTL_NO_AGENT=1``
    turns the agent off for one command.
    """
    path = vault or state().vault

    def local() -> Any:
        from memctl.vault.core import open_vault as _open

        return _open(
            path,
            credentials=credentials(passphrase_file, passphrase_command, key_file),
            actor=actor,
        )

    if use_agent:
        from memctl.agent.client import connect_vault

        proxy = connect_vault(path, actor=actor, open_local=local)
        if proxy is not None:
            return proxy
    return local()


# -- output ---------------------------------------------------------------------------------
def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def print_jsonl(rows: list[Any]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def one_line(text: str | None, width: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def info(message: str) -> None:
    """A human message on stderr (never stdout: stdout is for data)."""
    if not state().quiet:
        sys.stderr.write(message + "\n")


# -- errors ---------------------------------------------------------------------------------
def report_error(exc: MemctlError) -> None:
    sys.stderr.write(f"memctl: error: {exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"memctl: hint: {exc.hint}\n")


class MemctlGroup(TyperGroup):
    """Turns memctl's exceptions into a message on stderr and the documented exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MemctlError as exc:
            report_error(exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            sys.stderr.write("memctl: interrupted\n")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            # `memctl recall … | head`: not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None


def sub_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text, cls=MemctlGroup, no_args_is_help=True, pretty_exceptions_enable=False
    )


def load_model_with_spinner(vault: Any, mode: str | None) -> None:
    """Loading torch + the model takes seconds: say so on stderr (TTY only) instead of hanging.

    Through the agent the model is already warm, so nothing is shown.
    """
    # a VaultProxy (the agent) has a warm model already; only a local Vault loads one here
    if type(vault).__name__ != "Vault" or mode == "keyword" or not vault.header.model:
        return
    if vault._embedder is not None:
        return
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return
    with console(stderr=True).status("loading the embedding model…", spinner="dots"):
        _ = vault.embedder
