"""The vault header: public parameters, keyslots and the MAC that binds them.

The header is a JSON file, the only file of a vault with plaintext fields. Each keyslot wraps
the same master key (AES-256-GCM) under a key-encryption key derived from a passphrase
(Argon2id/scrypt) or a key file (HKDF). Everything except the keyslots is authenticated by
``public_mac`` (HMAC-SHA256 with a key derived from the master key), so the inbox public key
or the model pin cannot be swapped by someone without the passphrase. See docs/format.md.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memctl.crypto import aead, kdf
from memctl.crypto.keys import VaultKeys, keyfile_kek, mac
from memctl.errors import AuthenticationError, BadPassphrase, CorruptVault, UsageError
from memctl.store.db import check_cipher

FORMAT = "memctl-vault"
FORMAT_VERSION = 1
HEADER_NAME = "header.json"
MAX_HEADER_BYTES = 1 << 20
MAX_KEYSLOTS = 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any, what: str) -> bytes:
    """Strict base64: only the one spelling :func:`b64` writes."""
    try:
        return kdf.b64decode_canonical(text)
    except (TypeError, ValueError):  # binascii.Error is a ValueError
        raise CorruptVault(f"{HEADER_NAME}: {what} is not valid base64") from None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Keyslot:
    id: str
    type: str  # "passphrase" | "keyfile"
    wrapped: bytes
    created_at: str
    label: str = ""
    kdf: kdf.KdfParams | None = None  # passphrase slots
    salt: bytes | None = None  # key-file slots

    def aad(self, vault_id: bytes) -> bytes:
        return b"memctl/v1/keyslot|" + vault_id + b"|" + self.id.encode()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "label": self.label,
            "created_at": self.created_at,
            "wrapped": b64(self.wrapped),
        }
        if self.kdf is not None:
            d["kdf"] = self.kdf.to_json()
        if self.salt is not None:
            d["salt"] = b64(self.salt)
        return d

    @classmethod
    def from_json(cls, d: Any) -> Keyslot:
        if not isinstance(d, dict):
            raise CorruptVault(f"{HEADER_NAME}: a keyslot is not an object")
        slot_type = d.get("type")
        slot_id = d.get("id")
        if slot_type not in ("passphrase", "keyfile") or not isinstance(slot_id, str):
            raise CorruptVault(f"{HEADER_NAME}: malformed keyslot")
        where = f"{HEADER_NAME} keyslot {slot_id}"
        wrapped = unb64(d.get("wrapped"), f"keyslot {slot_id}")
        if len(wrapped) != kdf.KEY_LEN + aead.OVERHEAD:
            raise CorruptVault(f"{where}: wrapped key has the wrong length")
        slot = cls(
            id=slot_id,
            type=slot_type,
            wrapped=wrapped,
            created_at=str(d.get("created_at", "")),
            label=str(d.get("label", "")),
        )
        if slot_type == "passphrase":
            slot.kdf = kdf.KdfParams.from_json(d.get("kdf"), where=where)
        else:
            slot.salt = unb64(d.get("salt"), f"keyslot {slot_id} salt")
            if len(slot.salt) != 16:
                raise CorruptVault(f"{where}: salt must be 16 bytes")
        return slot


@dataclass
class Header:
    vault_id: bytes
    created_at: str
    keyslots: list[Keyslot] = field(default_factory=list)
    inbox_public: bytes | None = None
    inbox_private_wrapped: bytes | None = None
    model: dict[str, Any] | None = None
    #: index.db's page layout (memctl.store.db.CIPHER); None: SQLCipher 4's (older vaults)
    cipher: dict[str, Any] | None = None
    public_mac: bytes = b""
    version: int = FORMAT_VERSION

    # -- serialisation -------------------------------------------------------------------
    def public_fields(self) -> dict[str, Any]:
        """Everything the MAC covers (all but keyslots and the MAC itself)."""
        return {
            "format": FORMAT,
            "version": self.version,
            "vault_id": self.vault_id.hex(),
            "created_at": self.created_at,
            "inbox": {
                "public_key": b64(self.inbox_public) if self.inbox_public else None,
                "private_wrapped": b64(self.inbox_private_wrapped)
                if self.inbox_private_wrapped
                else None,
            },
            "model": self.model,
        } | ({"cipher": self.cipher} if self.cipher is not None else {})

    def to_json(self) -> dict[str, Any]:
        d = self.public_fields()
        d["keyslots"] = [s.to_json() for s in self.keyslots]
        d["public_mac"] = self.public_mac.hex()
        return d

    def compute_mac(self, keys: VaultKeys) -> bytes:
        canonical = json.dumps(self.public_fields(), sort_keys=True, separators=(",", ":"))
        return mac(keys.header_mac, b"memctl/v1/header", canonical.encode())

    def seal_public(self, keys: VaultKeys) -> None:
        self.public_mac = self.compute_mac(keys)

    def verify_public(self, keys: VaultKeys) -> None:
        import hmac

        if not hmac.compare_digest(self.compute_mac(keys), self.public_mac):
            raise AuthenticationError(
                f"{HEADER_NAME}: public fields fail authentication (tampered)"
            )

    @classmethod
    def parse(cls, raw: bytes) -> Header:
        """Parse and validate structure and bounds. Raises :class:`CorruptVault`."""
        if len(raw) > MAX_HEADER_BYTES:
            raise CorruptVault(f"{HEADER_NAME}: too large to be a vault header")
        try:
            d = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise CorruptVault(f"{HEADER_NAME}: not valid JSON (truncated or damaged)") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CorruptVault(f"{HEADER_NAME}: not a memctl vault header")
        version = d.get("version")
        if version != FORMAT_VERSION:
            raise CorruptVault(
                f"{HEADER_NAME}: format version {version!r} is not supported "
                f"(this memctl reads version {FORMAT_VERSION})"
            )
        try:
            vault_id = bytes.fromhex(d["vault_id"])
            public_mac = bytes.fromhex(d["public_mac"])
        except (KeyError, TypeError, ValueError):
            raise CorruptVault(f"{HEADER_NAME}: malformed vault id or MAC") from None
        # lowercase hex only, as written: a letter's case flipped is damage, not the same value
        if (
            len(vault_id) != 16
            or len(public_mac) != 32
            or vault_id.hex() != d["vault_id"]
            or public_mac.hex() != d["public_mac"]
        ):
            raise CorruptVault(f"{HEADER_NAME}: malformed vault id or MAC")
        slots_raw = d.get("keyslots")
        if not isinstance(slots_raw, list) or not 1 <= len(slots_raw) <= MAX_KEYSLOTS:
            raise CorruptVault(f"{HEADER_NAME}: keyslots missing or too many")
        inbox = d.get("inbox") or {}
        if not isinstance(inbox, dict):
            raise CorruptVault(f"{HEADER_NAME}: malformed inbox entry")
        model = d.get("model")
        if model is not None and not isinstance(model, dict):
            raise CorruptVault(f"{HEADER_NAME}: malformed model entry")
        cipher = check_cipher(d.get("cipher"))
        header = cls(
            vault_id=vault_id,
            created_at=str(d.get("created_at", "")),
            keyslots=[Keyslot.from_json(s) for s in slots_raw],
            inbox_public=unb64(inbox["public_key"], "inbox key")
            if inbox.get("public_key")
            else None,
            inbox_private_wrapped=unb64(inbox["private_wrapped"], "inbox key")
            if inbox.get("private_wrapped")
            else None,
            model=model,
            cipher=cipher,
            public_mac=public_mac,
            version=version,
        )
        ids = [s.id for s in header.keyslots]
        if len(set(ids)) != len(ids):
            raise CorruptVault(f"{HEADER_NAME}: duplicate keyslot ids")
        return header

    # -- keyslots ------------------------------------------------------------------------
    def add_passphrase_slot(
        self, master: bytes, passphrase: bytes, params: kdf.KdfParams, label: str = "passphrase"
    ) -> Keyslot:
        slot = Keyslot(
            id=new_slot_id(self),
            type="passphrase",
            wrapped=b"",
            created_at=now_iso(),
            label=label,
            kdf=params,
        )
        slot.wrapped = aead.seal(kdf.derive(passphrase, params), master, slot.aad(self.vault_id))
        self._append(slot)
        return slot

    def add_keyfile_slot(self, master: bytes, secret: bytes, label: str = "key file") -> Keyslot:
        salt = os.urandom(16)
        slot = Keyslot(
            id=new_slot_id(self),
            type="keyfile",
            wrapped=b"",
            created_at=now_iso(),
            label=label,
            salt=salt,
        )
        slot.wrapped = aead.seal(keyfile_kek(secret, salt), master, slot.aad(self.vault_id))
        self._append(slot)
        return slot

    def _append(self, slot: Keyslot) -> None:
        if len(self.keyslots) >= MAX_KEYSLOTS:
            raise UsageError(f"a vault holds at most {MAX_KEYSLOTS} keyslots")
        self.keyslots.append(slot)

    def unlock_passphrase(self, passphrase: bytes) -> tuple[bytes, Keyslot]:
        """Try every passphrase slot. Raises :class:`BadPassphrase` if none opens."""
        for slot in self.keyslots:
            if slot.type != "passphrase" or slot.kdf is None:
                continue
            kek = kdf.derive(passphrase, slot.kdf)
            try:
                return aead.open_(kek, slot.wrapped, slot.aad(self.vault_id)), slot
            except AuthenticationError:
                continue
        raise BadPassphrase("wrong passphrase: no passphrase keyslot opens with it")

    def unlock_keyfile(self, secret: bytes) -> tuple[bytes, Keyslot]:
        for slot in self.keyslots:
            if slot.type != "keyfile" or slot.salt is None:
                continue
            try:
                kek = keyfile_kek(secret, slot.salt)
                return aead.open_(kek, slot.wrapped, slot.aad(self.vault_id)), slot
            except AuthenticationError:
                continue
        raise BadPassphrase("wrong key file: no key-file keyslot opens with it")


def new_slot_id(header: Header) -> str:
    existing = {s.id for s in header.keyslots}
    while True:
        slot_id = secrets.token_hex(4)
        if slot_id not in existing:
            return slot_id


def read_header(vault_dir: Path) -> Header:
    path = vault_dir / HEADER_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorruptVault(f"{HEADER_NAME}: missing from the vault") from None
    return Header.parse(raw)


def write_header(vault_dir: Path, header: Header) -> None:
    """Atomically replace the header: write a temp file, fsync, rename, fsync the directory."""
    data = (json.dumps(header.to_json(), indent=2, sort_keys=True) + "\n").encode()
    write_atomic(vault_dir / HEADER_NAME, data)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
