"""The Typer application: every `memctl` command, one module per command group, joined here.

Only typer/click/rich load at start-up; heavy modules load inside the commands that need them.
The console entry point (:func:`memctl.cli.main`) loads this module only when the fast path
(:mod:`memctl.cli.fast`) does not serve the invocation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memctl import __version__
from memctl.cli import (
    agent_cmd,
    audit_cmd,
    bench_cmd,
    common,
    cron_cmd,
    erase_cmd,
    inbox_cmd,
    ingest_cmd,
    mcp_cmd,
    model_cmd,
    plugins_cmd,
    recall_cmd,
    vault_cmds,
)

app = typer.Typer(
    name="memctl",
    help="A local-first, encrypted, auditable personal memory vault.",
    cls=common.MemctlGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # never print locals (secrets) in tracebacks
    rich_markup_mode=None,
    add_completion=False,  # static scripts ship in completions/ (make completions)
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"memctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    vault: Annotated[
        Path | None, typer.Option("--vault", help="Vault directory [env: MEMCTL_VAULT].")
    ] = None,
    passphrase_file: Annotated[
        Path | None,
        typer.Option("--passphrase-file", help="Passphrase file [env: MEMCTL_PASSPHRASE_FILE]."),
    ] = None,
    passphrase_command: Annotated[
        str | None, typer.Option("--passphrase-command", help="Command printing the passphrase.")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Key file [env: MEMCTL_KEY_FILE].")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """memctl keeps what you want remembered in one encrypted folder and finds it fast.

    Unlock order: the agent, --passphrase-file, --passphrase-command, --key-file, a prompt.
    Exit codes: docs/exit-codes.md.
    """
    st = common.reset_state()
    st.vault = vault
    st.passphrase_file = passphrase_file
    st.passphrase_command = passphrase_command
    st.key_file = key_file
    st.quiet = quiet


app.command("init")(vault_cmds.init)
app.command("passwd")(vault_cmds.passwd)
app.command("status")(vault_cmds.status)
app.add_typer(vault_cmds.key_app, name="key")
app.command("ingest")(ingest_cmd.ingest)
app.command("recall")(recall_cmd.recall)
app.command("get")(recall_cmd.get)
app.command("list")(recall_cmd.list_)
app.command("unlock")(agent_cmd.unlock)
app.command("lock")(agent_cmd.lock)
app.command("agent")(agent_cmd.agent)
app.command("erase")(erase_cmd.erase)
app.command("export")(erase_cmd.export)
app.command("mcp")(mcp_cmd.mcp)
app.add_typer(audit_cmd.audit_app, name="audit")
app.add_typer(model_cmd.model_app, name="model")
app.add_typer(bench_cmd.bench_app, name="bench")
app.command("backup")(audit_cmd.backup)
app.command("restore")(audit_cmd.restore)
app.add_typer(inbox_cmd.inbox_app, name="inbox")
app.add_typer(cron_cmd.cron_app, name="cron")
app.command("plugins")(plugins_cmd.plugins)
# Last: plugins' own commands (hook memctl_commands); skipped when argv names a built-in command.
plugins_cmd.register_plugin_commands(app)
