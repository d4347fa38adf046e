"""`memctl unlock`, `lock` and `agent`: keep a vault unlocked for a while, like ssh-agent."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt

TtlOpt = Annotated[
    str,
    typer.Option(
        "--ttl", help="Lock after this long whatever happens (90s, 30m, 2h, 1h30m; 0: never)."
    ),
]
IdleOpt = Annotated[
    str, typer.Option("--idle", help="Lock after this long without a request (0: never).")
]


def _durations(ttl: str, idle: str) -> tuple[float, float]:
    from memctl.agent.config import parse_duration

    return parse_duration(ttl, what="--ttl"), parse_duration(idle, what="--idle")


def _say_running(info: dict[str, Any], *, reused: bool, json_out: bool) -> None:
    from memctl.agent.client import describe_agent

    if json_out:
        common.print_json({**info, "reused": reused})
        return
    verb = "already running" if reused else "started"
    common.info(f"agent {verb} for {info.get('vault')}: {describe_agent(info)}")


def unlock(
    ttl: TtlOpt = "2h",
    idle: IdleOpt = "15m",
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Unlock the vault once and keep it unlocked in the background (the agent).

    Later commands use the agent instead of asking for the passphrase, until `memctl lock`,
    the --ttl or the --idle timeout. An agent already running for the vault is reused.
    """
    from memctl.agent.client import AgentClient
    from memctl.agent.paths import resolve_vault
    from memctl.agent.protocol import AgentRunning

    ttl_s, idle_s = _durations(ttl, idle)
    path = resolve_vault(vault or common.state().vault)
    client = AgentClient.connect(path)
    if client is not None:
        client.close()
        _say_running(client.info, reused=True, json_out=json_out)
        return

    from memctl.agent import peer
    from memctl.agent.launch import start_agent
    from memctl.vault.core import open_vault

    creds = common.credentials(passphrase_file, passphrase_command, key_file)
    with open_vault(path, credentials=creds, actor="cli") as v:
        master, slot_id = v.keys.master, v.slot_id
    try:
        try:
            info = start_agent(path, master, slot_id, ttl=ttl_s, idle=idle_s)
        finally:
            peer.wipe(master)  # the agent has its own copy; ours came from a closed Vault
    except AgentRunning:  # another `memctl unlock` won the race
        client = AgentClient.connect(path)
        if client is None:
            raise
        client.close()
        _say_running(client.info, reused=True, json_out=json_out)
        return
    _say_running(info, reused=False, json_out=json_out)


def lock(
    all_: Annotated[bool, typer.Option("--all", help="Stop every agent of yours.")] = False,
    vault: VaultOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop the agent: it overwrites its keys and removes its socket. No agent: nothing to do."""
    from memctl.agent.client import AgentClient, running_agents

    if all_:
        clients = running_agents()
    else:
        client = AgentClient.connect(vault or common.state().vault, verify=False)
        clients = [client] if client else []
    stopped = []
    for client in clients:
        done = client.lock().get("done", True)
        stopped.append(
            {"vault": client.info.get("vault"), "pid": client.info.get("pid"), "done": done}
        )
    if json_out:
        common.print_json({"locked": stopped})
    elif not stopped:
        common.info("no agent is running" + ("" if all_ else " for this vault"))
    else:
        for s in stopped:
            how = "stopped" if s["done"] else "stops when its current request ends"
            common.info(f"locked {s['vault']} (agent {s['pid']} {how})")


def agent(
    ttl: TtlOpt = "2h",
    idle: IdleOpt = "15m",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log each request's operation and time.")
    ] = False,
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Run the agent in the foreground (logs on stderr; Ctrl-C stops it).

    `memctl unlock` starts the same agent in the background; this form suits a terminal you
    keep open, or a service manager.
    """
    from memctl.agent import peer
    from memctl.agent.client import describe_agent
    from memctl.agent.paths import agent_paths, resolve_vault
    from memctl.agent.server import claim, run
    from memctl.vault.core import open_vault

    ttl_s, idle_s = _durations(ttl, idle)
    peer.harden_process()  # before the passphrase is read
    path = resolve_vault(vault or common.state().vault)
    paths = agent_paths(path)
    lock_fd = claim(paths)
    try:
        creds = common.credentials(passphrase_file, passphrase_command, key_file)
        v = open_vault(path, credentials=creds, actor="cli")
    except BaseException:
        os.close(lock_fd)
        raise

    def log(message: str) -> None:
        sys.stderr.write(f"memctl agent[{os.getpid()}]: {message}\n")
        sys.stderr.flush()

    reason = run(
        v,
        paths,
        lock_fd,
        ttl=ttl_s,
        idle=idle_s,
        log=log,
        verbose=verbose,
        on_ready=lambda info: log(f"serving {path} on {paths.socket}; {describe_agent(info)}"),
    )
    del v
    log(f"stopped: {reason}; keys wiped")
