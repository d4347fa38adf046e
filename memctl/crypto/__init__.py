"""memctl's cryptography: pure functions, no I/O.

- :mod:`memctl.crypto.kdf` — passphrase → key-encryption key (Argon2id, scrypt fallback).
- :mod:`memctl.crypto.aead` — AES-256-GCM sealing with associated data.
- :mod:`memctl.crypto.keys` — HKDF sub-keys of the master key, record data keys, key files.
"""
