"""Known-answer and tamper tests for memctl.crypto (pure functions, no I/O)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memctl.crypto import aead, kdf
from memctl.crypto.keys import VaultKeys, hkdf, mac, unwrap_dek, wrap_dek
from memctl.errors import AuthenticationError, CorruptVault, UsageError


def test_aes_gcm_known_answer() -> None:
    # NIST GCM test case 13 (256-bit zero key, zero IV, empty plaintext): tag only.
    blob = aead.seal(bytes(32), b"", b"", nonce=bytes(12))
    assert blob[12:].hex() == "530f8afbc74536b9a963b4f1c4cb738b"
    # Test case 14: one zero block.
    blob = aead.seal(bytes(32), bytes(16), b"", nonce=bytes(12))
    assert (
        blob[12:].hex() == "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"
    )


def test_hkdf_rfc5869_case1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf(ikm, info, salt, length=42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_argon2id_rfc9106_vector() -> None:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    out = Argon2id(
        salt=bytes([2] * 16),
        length=32,
        iterations=3,
        lanes=4,
        memory_cost=32,
        ad=bytes([4] * 12),
        secret=bytes([3] * 8),
    ).derive(bytes([1] * 32))
    assert out.hex() == "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def test_scrypt_rfc7914_vector() -> None:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    out = Scrypt(salt=b"NaCl", length=64, n=1024, r=8, p=16).derive(b"password")
    assert out.hex().startswith("fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162")


def test_kdf_derive_is_deterministic_and_salted() -> None:
    p1 = kdf.KdfParams("argon2id", b"s" * 16, memory_kib=8192, iterations=1, lanes=4)
    p2 = kdf.KdfParams("argon2id", b"t" * 16, memory_kib=8192, iterations=1, lanes=4)
    assert kdf.derive(b"pw", p1) == kdf.derive(b"pw", p1)
    assert kdf.derive(b"pw", p1) != kdf.derive(b"pw", p2)
    assert kdf.derive(b"pw", p1) != kdf.derive(b"pW", p1)


@pytest.mark.parametrize(
    "params",
    [
        {"name": "argon2id", "memory_kib": 8, "iterations": 1, "lanes": 1},  # downgrade
        {"name": "argon2id", "memory_kib": 1 << 30, "iterations": 3, "lanes": 4},  # DoS
        {"name": "argon2id", "memory_kib": 65536, "iterations": 0, "lanes": 4},
        {"name": "argon2id", "memory_kib": 65536, "iterations": 1000, "lanes": 4},
        {"name": "scrypt", "n": 1024, "r": 8, "p": 1},
        {"name": "scrypt", "n": 3 << 14, "r": 8, "p": 1},
        {"name": "scrypt", "n": 1 << 30, "r": 8, "p": 1},
        {"name": "bcrypt"},
        {"name": "argon2id", "memory_kib": "lots", "iterations": 3, "lanes": 4},
    ],
)
def test_kdf_params_bounds_checked_on_read(params: dict) -> None:
    stored = {**params, "salt": base64.b64encode(b"x" * 16).decode()}
    with pytest.raises(CorruptVault):
        kdf.KdfParams.from_json(stored)


def test_kdf_params_round_trip() -> None:
    p = kdf.new_params(memory_mib=8, iterations=1)
    assert kdf.KdfParams.from_json({**p.to_json(), "name": p.name}) == p


def test_new_params_rejects_weak_options() -> None:
    with pytest.raises(UsageError):
        kdf.new_params(memory_mib=1)


def test_aead_round_trip_and_aad_binding() -> None:
    key = bytes(range(32))
    blob = aead.seal(key, b"secret", b"slot-1")
    assert aead.open_(key, blob, b"slot-1") == b"secret"
    with pytest.raises(AuthenticationError):
        aead.open_(key, blob, b"slot-2")
    with pytest.raises(AuthenticationError):
        aead.open_(bytes(32), blob, b"slot-1")
    with pytest.raises(AuthenticationError):
        aead.open_(key, blob[:10], b"slot-1")


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.data())
def test_flip_any_bit_is_an_authentication_error(plaintext: bytes, data) -> None:
    key = b"k" * 32
    blob = bytearray(aead.seal(key, plaintext, b"aad"))
    index = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    blob[index] ^= 1 << bit
    with pytest.raises(AuthenticationError):
        aead.open_(key, bytes(blob), b"aad")


def test_wrapped_dek_bound_to_record_id_and_tamper_evident() -> None:
    wrap_key = b"w" * 32
    dek = b"d" * 32
    wrapped = wrap_dek(wrap_key, dek, "01ABC")
    assert unwrap_dek(wrap_key, wrapped, "01ABC") == dek
    with pytest.raises(AuthenticationError):
        unwrap_dek(wrap_key, wrapped, "01ABD")
    for i in range(len(wrapped)):
        bad = bytearray(wrapped)
        bad[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            unwrap_dek(wrap_key, bytes(bad), "01ABC")


def test_subkeys_are_distinct_and_repr_redacted() -> None:
    keys = VaultKeys(b"m" * 32, b"v" * 16)
    derived = {
        keys.sqlcipher,
        keys.dedup,
        keys.dek_wrap,
        keys.header_mac,
        keys.journal_sign,
        keys.journal_mac,
        keys.journal_vault,
        keys.inbox_wrap,
    }
    assert len(derived) == 8
    assert "m" * 8 not in repr(keys)
    assert VaultKeys(b"m" * 32, b"w" * 16).sqlcipher != keys.sqlcipher


def test_mac_is_unambiguous() -> None:
    assert mac(b"k", b"ab", b"c") != mac(b"k", b"a", b"bc")
