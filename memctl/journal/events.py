"""Sealing event blobs and signing manifests — the journal's cryptography, without git.

Blob: ``0x01 (format) || key class (0x01 DEK, 0x02 vault key) || nonce(12) || AES-256-GCM
ciphertext || tag(16)``, AAD = ``"memctl-journal-event-v1\\0" || key class || path``, so a blob
cannot be moved to another path, record, sequence number or operation, nor relabelled as
encrypted under the other key. Every blob also gets an HMAC-SHA256 (keyed, so it fingerprints
nothing) listed in the signed manifest: the manifest still authenticates a blob whose DEK has
been destroyed, and does not rest on git's SHA-1 alone.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from memctl.crypto import aead
from memctl.errors import AuthenticationError, CorruptVault

from .model import FORMAT, KEY_DEK, KEY_VAULT

BLOB_VERSION = 1
KEY_CLASS = {KEY_DEK: 1, KEY_VAULT: 2}
KEY_CLASS_NAME = {v: k for k, v in KEY_CLASS.items()}

D_EVENT = b"memctl-journal-event-v1\0"
D_BLOB_MAC = b"memctl-journal-blob-v1\0"
D_MANIFEST = b"memctl-journal-manifest-v1\0"
D_SEALED = b"memctl-journal-sealed-v1\0"


# One encoder for every call: ``json.dumps`` with these options would build a new one each time.
_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
).encode


def dumps(obj: Any) -> bytes:
    """The one JSON encoding the journal writes (sorted keys, ASCII, no NaN)."""
    return _ENCODE(obj).encode()


# ---- event blobs ------------------------------------------------------------------------


def seal_event(key: bytes, key_class: str, path: str, body: dict[str, Any]) -> bytes:
    return seal_event_json(key, key_class, path, dumps(body))


def seal_event_json(key: bytes, key_class: str, path: str, plain: bytes) -> bytes:
    """``seal_event`` of a body already encoded with :func:`dumps` (or :class:`EventBodies`)."""
    cls = KEY_CLASS[key_class]
    aad = D_EVENT + bytes([cls]) + path.encode()
    return bytes([BLOB_VERSION, cls]) + aead.seal(key, plain, aad)


class EventBodies:
    """``dumps`` of one commit's event bodies, spliced from parts each encoded once.

    A body is ``{"actor", "commit_op", "jseq", "op", "payload", "record", "time"}``: sorted,
    the four fields shared by the commit are encoded once, the payload once (by the caller's
    check), and ``encode(...) == dumps(body)`` byte for byte (``sort_keys`` sorts nested
    objects the same way whether or not they are nested).
    """

    def __init__(self, actor: str, commit_op: str, jseq: int, time: str) -> None:
        self._head = (
            b'{"actor":' + dumps(actor) + b',"commit_op":' + dumps(commit_op)
            + b',"jseq":' + dumps(jseq) + b',"op":'
        )  # fmt: skip
        self._tail = b',"time":' + dumps(time) + b"}"
        self._ops: dict[str, bytes] = {}

    def encode(self, op: str, record: str | None, payload_json: bytes) -> bytes:
        op_json = self._ops.get(op)
        if op_json is None:
            op_json = self._ops[op] = dumps(op)
        record_json = b"null" if record is None else dumps(record)
        return b"".join(
            (self._head, op_json, b',"payload":', payload_json, b',"record":', record_json,
             self._tail)
        )  # fmt: skip


def blob_key_class(blob: bytes) -> str:
    """The key class a blob says it is under; CorruptVault if the header is malformed."""
    if len(blob) < 2 + aead.OVERHEAD or blob[0] != BLOB_VERSION or blob[1] not in KEY_CLASS_NAME:
        raise CorruptVault("journal event blob has an unknown format")
    return KEY_CLASS_NAME[blob[1]]


def open_event(key: bytes, path: str, blob: bytes) -> dict[str, Any]:
    """Decrypt an event blob; AuthenticationError on a wrong key or any altered byte."""
    cls = KEY_CLASS[blob_key_class(blob)]
    aad = D_EVENT + bytes([cls]) + path.encode()
    plain = aead.open_(key, blob[2:], aad, what="journal event")
    body = json.loads(plain)
    if not isinstance(body, dict):
        raise CorruptVault("journal event is not an object")
    return body


def blob_mac(mac_key: bytes, path: str, blob: bytes) -> str:
    msg = D_BLOB_MAC + path.encode() + b"\0" + blob
    return hmac.digest(mac_key, msg, "sha256").hex()  # one C call; same as hmac.new(...)


# ---- the sealed part of a manifest (actor, db_state) -------------------------------------


def _sealed_aad(seq: int, prev: str | None) -> bytes:
    return D_SEALED + str(seq).encode() + b"\0" + (prev or "").encode()


def seal_meta(vault_key: bytes, seq: int, prev: str | None, actor: str, db_state: Any) -> str:
    plain = dumps({"actor": actor, "db_state": db_state})
    return base64.b64encode(aead.seal(vault_key, plain, _sealed_aad(seq, prev))).decode()


def open_meta(vault_key: bytes, seq: int, prev: str | None, sealed: str) -> tuple[str, Any]:
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (ValueError, TypeError):
        raise CorruptVault("journal manifest: sealed field is not base64") from None
    meta = json.loads(aead.open_(vault_key, raw, _sealed_aad(seq, prev), what="journal manifest"))
    return meta["actor"], meta["db_state"]


# ---- manifests --------------------------------------------------------------------------


class Signer:
    """Ed25519 from the caller's 32-byte seed."""

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key()

    def __repr__(self) -> str:
        return "Signer(<secret>)"

    def sign(self, manifest: bytes) -> bytes:
        return self._key.sign(D_MANIFEST + manifest)


def signature_ok(public: Ed25519PublicKey, manifest: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, D_MANIFEST + manifest)
    except InvalidSignature:
        return False
    return True


def encode_manifest(body: dict[str, Any]) -> bytes:
    return dumps(body)


def decode_manifest(data: bytes) -> dict[str, Any]:
    """Parse and shape-check a manifest (call only after its signature has verified)."""
    try:
        body = json.loads(data)
    except ValueError:
        raise CorruptVault("journal manifest is not JSON") from None
    ok = (
        isinstance(body, dict)
        and body.get("format") == FORMAT
        and isinstance(body.get("seq"), int)
        and body["seq"] >= 1
        and (body.get("prev") is None or isinstance(body.get("prev"), str))
        and isinstance(body.get("op"), str)
        and isinstance(body.get("time"), str)
        and isinstance(body.get("sealed"), str)
        and isinstance(body.get("events"), list)
        and all(
            isinstance(e, dict)
            and isinstance(e.get("path"), str)
            and isinstance(e.get("blob"), str)
            and isinstance(e.get("mac"), str)
            and isinstance(e.get("op"), str)
            and e.get("key") in KEY_CLASS
            and (e.get("record") is None or isinstance(e.get("record"), str))
            for e in body["events"]
        )
    )
    if not ok:
        raise CorruptVault("journal manifest has an unknown shape")
    return body


def raise_bad_signature(commit: str) -> None:
    raise AuthenticationError(
        f"journal commit {commit}: manifest signature does not verify (tampered or wrong key)"
    )
