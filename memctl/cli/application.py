"""The Typer application: every `memctl` command, one module per command group, joined here.

Only typer/click/rich load at start-up; heavy modules load inside the commands that need them.
The console entry point (:func:`memctl.cli.main`) loads this module only when the fast path
(:mod:`memctl.cli.fast`) does not serve the invocation, and runs :func:`main`: the same
application, but a subcommand's options are built (Typer → click, about 2 ms a command) only
for the command that runs or whose help is shown; ``memctl --help`` lists every command from
its docstring alone. ``typer.main.get_command(app)`` still builds everything (docs, tests).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

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


class _LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each built on first access (in registration order)."""

    def __init__(
        self,
        build: dict[str, Callable[[], click.Command]],
        summary: dict[str, Callable[[], click.Command]],
    ) -> None:
        self._build = build
        self._summary = summary
        self._built: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._built:
            self._built[name] = self._build[name]()  # KeyError: no such command
        return self._built[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._build.setdefault(name, lambda: command)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._build[name]
        self._built.pop(name, None)
        self._summary.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._build)

    def __len__(self) -> int:
        return len(self._build)

    def summary(self, name: str) -> click.Command | None:
        """What a group's help lists for ``name`` (name, help, short help, hidden, deprecated)."""
        if name in self._built or name not in self._summary:
            return self.get(name)
        return self._summary[name]()


class LazyGroup(common.MemctlGroup):
    """The root group; with :class:`_LazyCommands` it builds only the subcommand it needs.

    With a plain dict of commands (``typer.main.get_command(app)``) it is a MemctlGroup.
    """

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # TyperGroup's, without building every command

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self._listing and isinstance(self.commands, _LazyCommands):
            return self.commands.summary(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="memctl",
    help="A local-first, encrypted, auditable personal memory vault.",
    cls=LazyGroup,
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


def _short_help_only(cls: type[click.Command]) -> bool:
    """A stand-in with the same help fields lists the same line for this class."""
    return cls.get_short_help_str is click.Command.get_short_help_str


def _lazy_entries(
    typer_app: typer.Typer,
) -> tuple[dict[str, Callable[[], click.Command]], dict[str, Callable[[], click.Command]]]:
    """For each command and group of ``typer_app``, as typer.main.get_group_from_info does:
    how to build it, and (when cheaper) a stand-in for the help listing."""
    short = typer_app.pretty_exceptions_short
    markup = typer_app.rich_markup_mode
    build: dict[str, Callable[[], click.Command]] = {}
    summary: dict[str, Callable[[], click.Command]] = {}
    for info in typer_app.registered_commands:
        assert info.callback is not None
        name = info.name or typer.main.get_command_name(info.callback.__name__)
        build[name] = lambda info=info: typer.main.get_command_from_info(
            info, pretty_exceptions_short=short, rich_markup_mode=markup
        )
        if _short_help_only(info.cls or TyperCommand):
            help_text = (
                inspect.getdoc(info.callback) if info.help is None else inspect.cleandoc(info.help)
            )
            summary[name] = lambda name=name, info=info, help_text=help_text: click.Command(
                name,
                help=help_text,
                short_help=info.short_help,
                hidden=info.hidden,
                deprecated=info.deprecated,
            )
    for group_info in typer_app.registered_groups:
        solved = typer.main.solve_typer_info_defaults(group_info)
        if not solved.name:
            return {}, {}  # commands merged into the parent: let Typer do it
        build[solved.name] = lambda group_info=group_info: typer.main.get_group_from_info(
            group_info,
            pretty_exceptions_short=short,
            rich_markup_mode=markup,
            suggest_commands=typer_app.suggest_commands,
        )
        if _short_help_only(solved.cls or TyperGroup):
            summary[solved.name] = lambda solved=solved: click.Command(
                solved.name,
                help=solved.help,
                short_help=solved.short_help,
                hidden=solved.hidden,
                deprecated=solved.deprecated,
            )
    return build, summary


def command(typer_app: typer.Typer = app) -> click.Command:
    """``typer_app`` as a click group whose subcommands are built on first use."""
    build, summary = _lazy_entries(typer_app)
    if not build:
        return typer.main.get_command(typer_app)
    shell = copy.copy(typer_app)
    shell.registered_commands = []
    shell.registered_groups = []
    group = typer.main.get_command(shell)  # the root: options, callback, help
    if not isinstance(group, LazyGroup):
        return typer.main.get_command(typer_app)
    group.commands = _LazyCommands(build, summary)
    return group


def main() -> Any:
    """Run the application (Typer's ``app()``; tracebacks are plain: pretty exceptions are off)."""
    return command()()
