"""`memctl mcp`: serve the vault to AI clients over MCP (stdio)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt


def mcp(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Only this namespace (repeatable); writes go to the first.",
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Refuse every write (no remember, no forget).")
    ] = False,
    allow_erase: Annotated[
        bool, typer.Option("--allow-erase", help="Offer the forget tool (off by default).")
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Per-client policy file (TOML or JSON); replaces --namespace/--allow-erase.",
        ),
    ] = None,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Serve the vault over MCP on stdin/stdout (for Claude, Cursor, VS Code, ...).

    Only the protocol goes to stdout; logs go to stderr. The vault is unlocked on the first
    tool call (key file, passphrase file or command, or the agent). Setup: docs/mcp.md.
    """
    from memctl.errors import UsageError
    from memctl.mcp.launcher import ServeOptions, serve
    from memctl.mcp.policy import PolicySet

    if policy is not None:
        if namespace or allow_erase:
            raise UsageError(
                "--policy replaces --namespace and --allow-erase; use one or the other"
            )
        policies = PolicySet.from_file(policy).tightened(read_only=read_only)
    else:
        policies = PolicySet.from_flags(namespace, read_only=read_only, allow_erase=allow_erase)
    st = common.state()
    options = ServeOptions(
        policies=policies,
        vault=vault or st.vault,
        passphrase_file=passphrase_file or st.passphrase_file,
        passphrase_command=passphrase_command or st.passphrase_command,
        key_file=key_file or st.key_file,
    )
    raise typer.Exit(serve(options))
