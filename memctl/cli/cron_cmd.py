"""`memctl cron example`: scheduling an ingest job (cron or a systemd user timer)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from memctl.cli import common
from memctl.cli.common import VaultOpt

cron_app = common.sub_app("Unattended ingest jobs: overlapping runs are refused (exit 6).")


@cron_app.command("example")
def example(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders/files the job ingests [default: ~/notes].")
    ] = None,
    job: Annotated[
        str, typer.Option("--job", help="The job's name (its lock and actor).")
    ] = "notes",
    every: Annotated[int, typer.Option(help="Minutes between runs.", min=1, max=1440)] = 15,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file", help="Key file the job unlocks with [default: ~/.config/memctl/JOB.key]."
        ),
    ] = None,
    vault: VaultOpt = None,
) -> None:
    """Print a crontab line and a systemd timer/service pair for an ingest job.

    The job unlocks with a key file (create it once with `memctl key add --key-file FILE`), runs
    as actor cron:JOB, prints nothing on success (--quiet), and holds a lock so a run that
    overlaps the previous one exits at once with code 6 and changes nothing.
    """
    from memctl.ingest.pipeline import job_actor
    from memctl.vault.core import resolve_path

    job_actor(job)  # validates the name
    vault_path = resolve_path(vault or common.state().vault).expanduser().absolute()
    key = (key_file or Path("~/.config/memctl") / f"{job}.key").expanduser().absolute()
    targets = [p.expanduser().absolute() for p in (paths or [Path("~/notes")])]
    exe = shutil.which("memctl") or str(Path(sys.argv[0]).absolute())
    q = shlex.quote
    args = " ".join(q(str(t)) for t in targets)
    command = f"{q(exe)} ingest --job {q(job)} --quiet {args}"
    cron_env = f"MEMCTL_VAULT={q(str(vault_path))} MEMCTL_KEY_FILE={q(str(key))} MEMCTL_NO_AGENT=1"
    minute = "*" if every == 1 else f"*/{every}" if every < 60 else "0"
    hours = "*" if every <= 60 else f"*/{every // 60}"
    unit = f"memctl-{job}"
    calendar = f"*:0/{every}" if every < 60 else f"*-*-* 0/{every // 60}:00:00"

    def env(name: str, value: Path) -> str:
        pair = f"{name}={value}"
        return f'"{pair}"' if any(c.isspace() for c in pair) else pair

    typer.echo(
        f"""# 1. Once: a key file for the job (a keyslot of its own; asks for the passphrase).
#    memctl key add --key-file {q(str(key))} --label {q("cron " + job)}

# 2a. cron (crontab -e): every {every} min. Exit 6 means the previous run still held the lock.
{minute} {hours} * * * {cron_env} {command}

# 2b. or a systemd user timer:
# ~/.config/systemd/user/{unit}.service
[Unit]
Description=memctl ingest job {job}

[Service]
Type=oneshot
Environment={env("MEMCTL_VAULT", vault_path)}
Environment={env("MEMCTL_KEY_FILE", key)}
Environment=MEMCTL_NO_AGENT=1
ExecStart={command}
# 6: the previous run of this job was still running (nothing done); 9: some files failed.
SuccessExitStatus=6
Nice=10
IOSchedulingClass=idle
NoNewPrivileges=yes
PrivateTmp=yes

# ~/.config/systemd/user/{unit}.timer
[Unit]
Description=Run memctl ingest job {job} every {every} min

[Timer]
OnCalendar={calendar}
Persistent=true

[Install]
WantedBy=timers.target

# then: systemctl --user daemon-reload && systemctl --user enable --now {unit}.timer
#       journalctl --user -u {unit}.service   (errors; success prints nothing)"""
    )
