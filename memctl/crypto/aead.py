"""Authenticated encryption: AES-256-GCM with a random 96-bit nonce.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. The associated data
binds a blob to where it belongs (a keyslot id, a record id), so blobs cannot be swapped.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from memctl.errors import AuthenticationError

KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = NONCE_LEN + TAG_LEN


def seal(key: bytes, plaintext: bytes, aad: bytes = b"", *, nonce: bytes | None = None) -> bytes:
    """Encrypt and authenticate ``plaintext``. ``nonce`` is for known-answer tests only."""
    if len(key) != KEY_LEN:
        raise ValueError("AEAD key must be 32 bytes")
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    if len(nonce) != NONCE_LEN:
        raise ValueError("nonce must be 12 bytes")
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_(key: bytes, blob: bytes, aad: bytes = b"", *, what: str = "data") -> bytes:
    """Decrypt a sealed blob; any failure is an :class:`AuthenticationError` naming ``what``."""
    if len(key) != KEY_LEN:
        raise ValueError("AEAD key must be 32 bytes")
    if len(blob) < OVERHEAD:
        raise AuthenticationError(f"{what}: sealed data is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
    except InvalidTag:
        raise AuthenticationError(
            f"{what}: authentication failed (tampered or wrong key)"
        ) from None
