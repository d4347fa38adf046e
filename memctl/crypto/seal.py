"""Sealed envelopes: encrypt to a public key, so a writer with no vault key can leave data that
only an unlocked vault can read (the inbox, ``docs/ingest.md``).

An anonymous-sender construction (ECIES-like): a fresh ephemeral X25519 key pair per envelope,
its shared secret with the recipient's public key stretched by HKDF-SHA256 into a one-time
AES-256-GCM key. Pure functions, no I/O. Format version 1, all fields fixed-size::

    offset  size  field
    0       4     magic "MCIB"
    4       1     version (1)
    5       16    vault id (the recipient vault, in clear: lets an importer name a foreign one)
    21      32    ephemeral X25519 public key
    53      12    AES-GCM nonce
    65      n+16  AES-256-GCM ciphertext of the payload, then the tag

    key = HKDF-SHA256(ikm = X25519(ephemeral, recipient),
                      salt = ephemeral public || recipient public,
                      info = "memctl/v1/inbox-seal", length 32)
    aad = bytes 0..53 (magic, version, vault id, ephemeral public key)

The associated data binds the format version and the vault id: an envelope cannot be replayed
into another vault or reinterpreted under another version. Anyone holding the public key can
seal (that is the point); only the private key opens, and any changed bit fails the tag.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from memctl.errors import AuthenticationError

MAGIC = b"MCIB"
VERSION = 1
VAULT_ID_LEN = 16
KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = len(MAGIC) + 1 + VAULT_ID_LEN + KEY_LEN  # what the AAD covers: 53 bytes
PREFIX_LEN = HEADER_LEN + NONCE_LEN  # 65 bytes before the ciphertext
OVERHEAD = PREFIX_LEN + TAG_LEN
INFO = b"memctl/v1/inbox-seal"


def _raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def public_key_of(private_key: bytes) -> bytes:
    """The raw 32-byte X25519 public key of a raw private key."""
    if len(private_key) != KEY_LEN:
        raise ValueError("an X25519 private key is 32 bytes")
    return _raw_public(X25519PrivateKey.from_private_bytes(private_key))


def _envelope_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_LEN,
        salt=ephemeral_public + recipient_public,
        info=INFO,
    ).derive(shared)


def seal(
    recipient_public: bytes,
    plaintext: bytes,
    *,
    vault_id: bytes,
    ephemeral_private: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` to ``recipient_public`` for the vault ``vault_id``.

    ``ephemeral_private`` and ``nonce`` exist for known-answer tests only; never pass them
    otherwise (reusing an ephemeral key with a nonce breaks AES-GCM).
    """
    if len(recipient_public) != KEY_LEN:
        raise ValueError("an X25519 public key is 32 bytes")
    if len(vault_id) != VAULT_ID_LEN:
        raise ValueError("a vault id is 16 bytes")
    eph = (
        X25519PrivateKey.generate()
        if ephemeral_private is None
        else X25519PrivateKey.from_private_bytes(ephemeral_private)
    )
    eph_public = _raw_public(eph)
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError:
        raise ValueError("the recipient public key is not usable (a low-order point)") from None
    key = _envelope_key(shared, eph_public, recipient_public)
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    if len(nonce) != NONCE_LEN:
        raise ValueError("nonce must be 12 bytes")
    header = MAGIC + bytes([VERSION]) + vault_id + eph_public
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header)


def envelope_vault_id(envelope: bytes) -> bytes | None:
    """The vault id an envelope claims to be sealed for (unauthenticated), or None if the
    bytes are not a version-1 envelope."""
    if len(envelope) < OVERHEAD or envelope[:4] != MAGIC or envelope[4] != VERSION:
        return None
    return envelope[5 : 5 + VAULT_ID_LEN]


def open_envelope(recipient_private: bytes, envelope: bytes, *, vault_id: bytes) -> bytes:
    """Decrypt an envelope sealed to ``recipient_private``'s public key for ``vault_id``.

    Every failure is an :class:`AuthenticationError` with a reason that quotes nothing from
    the envelope: not an envelope, an unknown version, sealed for another vault, or a failed
    tag (tampered, truncated, or sealed to another key).
    """
    if len(envelope) < len(MAGIC) + 1 or envelope[:4] != MAGIC:
        raise AuthenticationError("not a memctl envelope")
    if envelope[4] != VERSION:
        raise AuthenticationError(f"unsupported envelope version {envelope[4]}")
    if len(envelope) < OVERHEAD:
        raise AuthenticationError("envelope is truncated")
    if envelope[5 : 5 + VAULT_ID_LEN] != vault_id:
        raise AuthenticationError("envelope was sealed for another vault")
    header = envelope[:HEADER_LEN]
    eph_public = envelope[HEADER_LEN - KEY_LEN : HEADER_LEN]
    nonce = envelope[HEADER_LEN:PREFIX_LEN]
    private = X25519PrivateKey.from_private_bytes(recipient_private)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_public))
    except ValueError:
        raise AuthenticationError("envelope has an invalid ephemeral key") from None
    key = _envelope_key(shared, eph_public, _raw_public(private))
    try:
        return AESGCM(key).decrypt(nonce, envelope[PREFIX_LEN:], header)
    except InvalidTag:
        raise AuthenticationError(
            "envelope failed authentication (tampered, or sealed to another key)"
        ) from None
