"""Where the secret comes from: files, a command, a key file, or a prompt — never argv or env.

Environment variables only ever name a *file* (``MEMCTL_PASSPHRASE_FILE``, ``MEMCTL_KEY_FILE``),
never hold the secret itself. The order (after the agent): passphrase file, passphrase command,
key file, interactive prompt.
"""

from __future__ import annotations

import base64
import binascii
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memctl.errors import BadPassphrase, UsageError, VaultLocked

KEYFILE_PREFIX = "memctl-keyfile-v1:"
MAX_SECRET_FILE = 64 * 1024
PASSPHRASE_COMMAND_TIMEOUT = 120

UNLOCK_HINT = (
    "unlock with --passphrase-file FILE (or MEMCTL_PASSPHRASE_FILE), --passphrase-command CMD, "
    "--key-file FILE (or MEMCTL_KEY_FILE), `memctl unlock` (the agent), or run interactively"
)


@dataclass
class Credentials:
    """What the caller offered to unlock with. Empty fields are skipped."""

    passphrase: bytes | None = None  # Python API only
    passphrase_file: Path | None = None
    passphrase_command: str | None = None
    key_file: Path | None = None
    interactive: bool = False
    prompt: Callable[[str], str] | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Credentials:
        creds = cls(**overrides)  # type: ignore[arg-type]
        if creds.passphrase_file is None and os.environ.get("MEMCTL_PASSPHRASE_FILE"):
            creds.passphrase_file = Path(os.environ["MEMCTL_PASSPHRASE_FILE"])
        if creds.key_file is None and os.environ.get("MEMCTL_KEY_FILE"):
            creds.key_file = Path(os.environ["MEMCTL_KEY_FILE"])
        return creds

    def offered(self) -> bool:
        return bool(
            self.passphrase is not None
            or self.passphrase_file
            or self.passphrase_command
            or self.key_file
        )


def _read_secret_file(path: Path, what: str) -> bytes:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISFIFO(st.st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        with path.open("rb") as fh:
            data = fh.read(MAX_SECRET_FILE + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise UsageError(f"{what} {path} is not readable") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory") from None
    if len(data) > MAX_SECRET_FILE:
        raise UsageError(f"{what} {path} is too large to be a secret")
    return data


def strip_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def read_passphrase_file(path: Path) -> bytes:
    secret = strip_newline(_read_secret_file(path, "passphrase file"))
    if not secret:
        raise UsageError(f"passphrase file {path} is empty")
    return secret


def run_passphrase_command(command: str) -> bytes:
    """Run a command (no shell) whose stdout is the passphrase, e.g. ``pass show memctl``."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--passphrase-command cannot be parsed: {exc}") from None
    if not argv:
        raise UsageError("--passphrase-command is empty")
    try:
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=None,
            timeout=PASSPHRASE_COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError(f"passphrase command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise VaultLocked("passphrase command timed out") from None
    if proc.returncode != 0:
        raise VaultLocked(f"passphrase command failed with exit code {proc.returncode}")
    secret = strip_newline(proc.stdout)
    if not secret:
        raise VaultLocked("passphrase command printed nothing")
    return secret


def new_keyfile_secret() -> tuple[bytes, bytes]:
    """A fresh key-file secret and the file contents that hold it."""
    secret = os.urandom(32)
    content = (KEYFILE_PREFIX + base64.urlsafe_b64encode(secret).decode() + "\n").encode()
    return secret, content


def read_key_file(path: Path) -> bytes:
    data = _read_secret_file(path, "key file").strip()
    text = data.decode("ascii", errors="replace")
    if not text.startswith(KEYFILE_PREFIX):
        raise UsageError(f"{path} is not a memctl key file (create one with `memctl key add`)")
    try:
        secret = base64.urlsafe_b64decode(text[len(KEYFILE_PREFIX) :])
    except (binascii.Error, ValueError):
        raise UsageError(f"{path} is a damaged memctl key file") from None
    if len(secret) != 32:
        raise UsageError(f"{path} is a damaged memctl key file")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"memctl: warning: key file {path} is readable by other users; chmod 600 it",
            file=sys.stderr,
        )
    return secret


def prompt_passphrase(
    prompt: Callable[[str], str] | None = None, *, confirm: bool = False
) -> bytes:
    """Ask on the terminal without echo."""
    import getpass

    ask = prompt or getpass.getpass
    first = ask("Vault passphrase: ")
    if confirm:
        second = ask("Repeat passphrase: ")
        if first != second:
            raise UsageError("the passphrases do not match")
    if not first:
        raise UsageError("an empty passphrase is not allowed")
    return first.encode()


def interactive_possible() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def new_passphrase(creds: Credentials) -> bytes:
    """The passphrase for a new vault or keyslot (init, passwd): file, command or prompt."""
    if creds.passphrase is not None:
        if not creds.passphrase:
            raise UsageError("an empty passphrase is not allowed")
        return creds.passphrase
    if creds.passphrase_file:
        return read_passphrase_file(creds.passphrase_file)
    if creds.passphrase_command:
        return run_passphrase_command(creds.passphrase_command)
    if creds.interactive and interactive_possible():
        return prompt_passphrase(creds.prompt, confirm=True)
    raise VaultLocked("no passphrase given", hint=UNLOCK_HINT)


def unlock_master(header: object, creds: Credentials) -> tuple[bytes, str]:
    """Open a keyslot with the first credential that works; returns (master key, slot id).

    Every offered credential is tried in order; the error of the last failure is raised.
    """
    from memctl.vault.header import Header

    assert isinstance(header, Header)
    failure: BadPassphrase | None = None
    attempts: list[Callable[[], tuple[bytes, object]]] = []
    if creds.passphrase is not None:
        attempts.append(lambda: header.unlock_passphrase(creds.passphrase or b""))
    if creds.passphrase_file:
        path = creds.passphrase_file
        attempts.append(lambda: header.unlock_passphrase(read_passphrase_file(path)))
    if creds.passphrase_command:
        cmd = creds.passphrase_command
        attempts.append(lambda: header.unlock_passphrase(run_passphrase_command(cmd)))
    if creds.key_file:
        kpath = creds.key_file
        attempts.append(lambda: header.unlock_keyfile(read_key_file(kpath)))
    if not attempts and creds.interactive and interactive_possible():
        attempts.append(lambda: header.unlock_passphrase(prompt_passphrase(creds.prompt)))
    if not attempts:
        raise VaultLocked("the vault is locked and no unlock method was given", hint=UNLOCK_HINT)
    for attempt in attempts:
        try:
            master, slot = attempt()
            return master, slot.id  # type: ignore[attr-defined]
        except BadPassphrase as exc:
            failure = exc
    assert failure is not None
    raise failure
