"""`memctl init`, `passwd`, `status` and `key add|list|remove`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import JsonOpt, KeyFileOpt, PassCmdOpt, PassFileOpt, VaultOpt


def init(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    kdf_memory_mib: Annotated[
        int | None, typer.Option(help="Argon2id memory in MiB (default 64; minimum 8).")
    ] = None,
    kdf_iterations: Annotated[int | None, typer.Option(help="Argon2id passes (default 3).")] = None,
    model: Annotated[
        str,
        typer.Option(
            help="Embedding model: default (all-MiniLM-L6-v2), a local model directory, "
            "hashing-<dim> (tests), or none (keyword only)."
        ),
    ] = "default",
    json_out: JsonOpt = False,
) -> None:
    """Create a new encrypted vault (asks for a passphrase unless one is given)."""
    from memctl.vault.core import init_vault, resolve_path

    path = init_vault(
        vault or common.state().vault,
        credentials=common.credentials(passphrase_file, passphrase_command, None),
        kdf_memory_mib=kdf_memory_mib,
        kdf_iterations=kdf_iterations,
        model=None if model.lower() == "none" else model,
    )
    if json_out:
        common.print_json({"vault": str(resolve_path(path)), "created": True})
    else:
        common.info(f"created vault at {path}")


def passwd(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    new_passphrase_file: Annotated[
        Path | None, typer.Option(help="Read the NEW passphrase from this file.")
    ] = None,
) -> None:
    """Change the passphrase. Only the master key is re-wrapped; no data is re-encrypted."""
    from memctl.vault.unlock import Credentials, new_passphrase

    with common.open_vault(
        vault, passphrase_file, passphrase_command, key_file, use_agent=False
    ) as v:
        secret = new_passphrase(Credentials(passphrase_file=new_passphrase_file, interactive=True))
        slot = v.change_passphrase(secret)
    common.info(f"passphrase changed (keyslot {slot})")


def status(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Record counts, sizes, format version and model. Never shows a secret."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        info = v.status()
    if "agent" not in info:  # unlocked here: say whether an agent runs (e.g. for another path)
        from memctl.agent.client import agent_status

        info["agent"] = agent_status(vault or common.state().vault)
    if json_out:
        common.print_json(info)
        return
    from memctl.agent.client import describe_agent

    model = info["model"]["name"] if info["model"] else "none (keyword only)"
    lines = [
        ("vault", info["vault"]),
        ("records", str(info["records"])),
        ("namespaces", ", ".join(f"{k} ({n})" for k, n in info["namespaces"].items()) or "-"),
        ("versions", str(info["versions"])),
        ("format", f"v{info['format_version']} (schema {info['schema_version']})"),
        ("model", model),
        ("keyslots", str(info["keyslots"])),
        ("size", f"{info['bytes'] / 1e6:.2f} MB"),
        ("agent", describe_agent(info["agent"])),
    ]
    for key, value in lines:
        typer.echo(f"{key + ':':<12} {value}")


key_app = common.sub_app("Key files and keyslots for unattended jobs.")


@key_app.command("add")
def key_add(
    new_key_file: Annotated[
        Path, typer.Option("--key-file", help="Where to create the new key file (must not exist).")
    ],
    label: Annotated[str, typer.Option(help="A label for the keyslot.")] = "key file",
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key file (0600) and a keyslot it opens: for cron jobs and services."""
    with common.open_vault(vault, passphrase_file, passphrase_command, None, use_agent=False) as v:
        slot = v.add_key_file(new_key_file, label=label)
    if json_out:
        common.print_json({"keyslot": slot, "key_file": str(new_key_file)})
    else:
        common.info(f"created key file {new_key_file} (keyslot {slot}); keep it private")


@key_app.command("list")
def key_list(
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List keyslots (ids, types, labels; never key material)."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        slots = v.list_keyslots()
    if json_out:
        common.print_json(slots)
        return
    for s in slots:
        mark = " (in use)" if s["in_use"] else ""
        typer.echo(f"{s['id']}\t{s['type']}\t{s['kdf']}\t{s['created_at']}\t{s['label']}{mark}")


@key_app.command("remove")
def key_remove(
    slot_id: Annotated[str, typer.Argument(help="Keyslot id from `memctl key list`.")],
    vault: VaultOpt = None,
    passphrase_file: PassFileOpt = None,
    passphrase_command: PassCmdOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Remove a keyslot (refuses to remove the last one)."""
    with common.open_vault(vault, passphrase_file, passphrase_command, key_file) as v:
        v.remove_keyslot(slot_id)
    common.info(f"removed keyslot {slot_id}")
