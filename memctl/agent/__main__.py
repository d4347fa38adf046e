"""``python -m memctl.agent``: the detached agent that ``memctl unlock`` starts.

Not meant to be run by hand (``memctl agent`` is the foreground version): it expects the master
key on stdin (see :mod:`memctl.agent.launch`) and reports readiness as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memctl.agent")
    parser.add_argument("--vault", required=True)
    parser.add_argument("--ttl", type=float, default=0.0)
    parser.add_argument("--idle", type=float, default=0.0)
    parser.add_argument("--detach", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    if args.detach and os.fork() > 0:
        os._exit(0)  # the caller reaps this one; the agent is reparented and never a zombie

    from memctl.agent import peer

    peer.harden_process()  # before the key is read
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)

    def report(reply: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            out.write(json.dumps(reply).encode() + b"\n")
            out.flush()
            out.close()

    def log(message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"memctl agent[{os.getpid()}]: {message}\n")
            sys.stderr.flush()

    from memctl.agent.protocol import AgentError, error_payload
    from memctl.errors import MemctlError

    master: bytearray | None = None
    try:
        from memctl.agent.launch import read_key_frame

        master, slot_id = read_key_frame(sys.stdin.buffer)
        os.dup2(devnull, 0)
        from memctl.agent.paths import agent_paths
        from memctl.agent.server import claim, open_agent_vault

        vault_path = _resolved(args.vault)
        paths = agent_paths(vault_path)
        lock_fd = claim(paths)
        try:
            vault = open_agent_vault(vault_path, bytes(master), slot_id)
        except BaseException:
            os.close(lock_fd)
            raise
    except MemctlError as exc:
        peer.wipe(master)
        report({"ok": False, "error": error_payload(exc)})
        log(f"did not start: {exc.message}")
        return int(exc.exit_code)
    except Exception as exc:
        peer.wipe(master)
        report(
            {
                "ok": False,
                "error": error_payload(AgentError(f"could not start ({type(exc).__name__})")),
            }
        )
        log("did not start:\n" + traceback.format_exc(limit=8))
        return 1

    from memctl.agent.server import run

    log(f"serving {vault_path}")
    reason = run(
        vault,
        paths,
        lock_fd,
        ttl=args.ttl,
        idle=args.idle,
        log=log,
        verbose=args.verbose,
        on_ready=lambda info: report({"ok": True, "result": info}),
        wipe_also=(master,),
    )
    del vault, master
    log(f"stopped: {reason}; keys wiped")
    return 0


def _resolved(path: str) -> Any:
    from memctl.agent.paths import resolve_vault

    return resolve_vault(path)


if __name__ == "__main__":
    sys.exit(main())
