"""Key hierarchy: the master key and everything derived from it.

Every key other than the master key and the per-record data keys is derived with HKDF-SHA256
(RFC 5869) from the master key, with the vault id as salt and a distinct ``info`` label, so no
two purposes ever share a key. See ``docs/format.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from memctl.crypto import aead

MASTER_KEY_LEN = 32
DEK_LEN = 32

# HKDF info labels — part of the on-disk format; never change one.
LABEL_SQLCIPHER = b"memctl/v1/sqlcipher"
LABEL_DEDUP = b"memctl/v1/dedup-mac"
LABEL_DEK_WRAP = b"memctl/v1/dek-wrap"
LABEL_HEADER_MAC = b"memctl/v1/header-mac"
LABEL_JOURNAL_SIGN = b"memctl/v1/journal-sign"
LABEL_JOURNAL_MAC = b"memctl/v1/journal-mac"
LABEL_JOURNAL_VAULT = b"memctl/v1/journal-vault"
LABEL_INBOX_WRAP = b"memctl/v1/inbox-wrap"
LABEL_KEYFILE = b"memctl/v1/keyfile-kek"


def hkdf(key: bytes, info: bytes, salt: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def new_master_key() -> bytes:
    return os.urandom(MASTER_KEY_LEN)


def new_dek() -> bytes:
    return os.urandom(DEK_LEN)


@dataclass(frozen=True, repr=False)
class VaultKeys:
    """The master key's derived sub-keys. ``repr`` never shows key material."""

    master: bytes
    vault_id: bytes

    def __repr__(self) -> str:
        return "VaultKeys(<redacted>)"

    def _derive(self, label: bytes) -> bytes:
        return hkdf(self.master, label, self.vault_id)

    @property
    def sqlcipher(self) -> bytes:
        return self._derive(LABEL_SQLCIPHER)

    @property
    def dedup(self) -> bytes:
        return self._derive(LABEL_DEDUP)

    @property
    def dek_wrap(self) -> bytes:
        return self._derive(LABEL_DEK_WRAP)

    @property
    def header_mac(self) -> bytes:
        return self._derive(LABEL_HEADER_MAC)

    @property
    def journal_sign(self) -> bytes:
        return self._derive(LABEL_JOURNAL_SIGN)

    @property
    def journal_mac(self) -> bytes:
        return self._derive(LABEL_JOURNAL_MAC)

    @property
    def journal_vault(self) -> bytes:
        return self._derive(LABEL_JOURNAL_VAULT)

    @property
    def inbox_wrap(self) -> bytes:
        return self._derive(LABEL_INBOX_WRAP)


def mac(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over length-prefixed parts (unambiguous concatenation)."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def wrap_dek(wrap_key: bytes, dek: bytes, record_id: str) -> bytes:
    return aead.seal(wrap_key, dek, b"memctl/v1/dek|" + record_id.encode())


def unwrap_dek(wrap_key: bytes, wrapped: bytes, record_id: str) -> bytes:
    return aead.open_(wrap_key, wrapped, b"memctl/v1/dek|" + record_id.encode(), what="record key")


def keyfile_kek(keyfile_secret: bytes, salt: bytes) -> bytes:
    """A key file holds 32 random bytes: no stretching needed, only domain separation."""
    return hkdf(keyfile_secret, LABEL_KEYFILE, salt)
