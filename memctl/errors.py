"""memctl's exceptions and exit codes, defined once.

The library raises these; only the CLI turns them into messages and exit codes
(see ``docs/exit-codes.md``). Messages never contain a secret or a record's text.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes. Stable: scripts depend on them."""

    OK = 0
    ERROR = 1  # unexpected internal error
    USAGE = 2  # bad arguments or input (click's own usage errors use 2 too)
    NO_VAULT = 3  # no vault at the given path
    BAD_PASSPHRASE = 4  # no keyslot opens with the given secret
    LOCKED = 5  # no unlock source available (non-interactive, no agent)
    BUSY = 6  # vault busy: another writer holds it, or a job lock is held
    CORRUPT = 7  # header, database, journal or envelope failed authentication
    NOT_FOUND = 8  # a record id that does not exist
    PARTIAL = 9  # some items failed, the rest were done
    PLUGIN = 10  # a plugin failed
    NO_SPACE = 11  # disk full or I/O error while writing; nothing acknowledged was lost
    REFUSED = 12  # refused by policy or confirmation (e.g. erase without --yes, no TTY)
    INCOMPLETE = 13  # an operation finished logically but not physically (erase pending)
    INTERRUPTED = 130  # Ctrl-C


class MemctlError(Exception):
    """Base class. ``exit_code`` tells the CLI how to exit."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MemctlError):
    exit_code = ExitCode.USAGE


class VaultNotFound(MemctlError):
    exit_code = ExitCode.NO_VAULT


class VaultExists(MemctlError):
    exit_code = ExitCode.USAGE


class BadPassphrase(MemctlError):
    exit_code = ExitCode.BAD_PASSPHRASE


class VaultLocked(MemctlError):
    exit_code = ExitCode.LOCKED


class VaultBusy(MemctlError):
    exit_code = ExitCode.BUSY


class CorruptVault(MemctlError):
    """Authentication failed or a file is malformed. Names the file, never its content."""

    exit_code = ExitCode.CORRUPT


class AuthenticationError(CorruptVault):
    """An AEAD tag, MAC or signature did not verify."""


class RecordNotFound(MemctlError):
    exit_code = ExitCode.NOT_FOUND


class PluginError(MemctlError):
    exit_code = ExitCode.PLUGIN


class NoSpace(MemctlError):
    exit_code = ExitCode.NO_SPACE


class Refused(MemctlError):
    exit_code = ExitCode.REFUSED


class Incomplete(MemctlError):
    exit_code = ExitCode.INCOMPLETE


class ModelError(MemctlError):
    """The embedding model is missing, tampered with, or does not match the vault's pin."""

    exit_code = ExitCode.CORRUPT
