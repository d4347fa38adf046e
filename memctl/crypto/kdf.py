"""Passphrase key derivation: Argon2id (RFC 9106) with a scrypt fallback.

Parameters are stored in each keyslot and **bounds-checked on read**, so a tampered header can
neither make unlocking trivially cheap (a downgrade) nor exhaust memory or time (a denial of
service).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from memctl.errors import CorruptVault, UsageError


def b64decode_canonical(text: Any) -> bytes:
    """Standard base64 in its one padded spelling only; ValueError otherwise (a flipped
    padding bit decodes to the same bytes, and must read as damage)."""
    import base64

    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode() != text:
        raise ValueError("non-canonical base64")
    return data


SALT_LEN = 16
KEY_LEN = 32

# RFC 9106 §4 "second recommended option": 64 MiB, 3 passes, 4 lanes (~0.25 s on 2 cores).
ARGON2_DEFAULT = {"memory_kib": 65536, "iterations": 3, "lanes": 4}
# scrypt where OpenSSL lacks Argon2id: N=2^17, r=8, p=1 (~0.4 s, 128 MiB).
SCRYPT_DEFAULT = {"n": 2**17, "r": 8, "p": 1}

# Accepted ranges. The minimums are what `memctl init --kdf-memory-mib 8 --kdf-iterations 1`
# allows (tests use them); anything below is treated as tampering.
ARGON2_BOUNDS = {"memory_kib": (8192, 4 * 1024 * 1024), "iterations": (1, 64), "lanes": (1, 64)}
SCRYPT_BOUNDS = {"log2_n": (14, 22), "r": (1, 32), "p": (1, 16)}


@dataclass(frozen=True)
class KdfParams:
    name: str  # "argon2id" | "scrypt"
    salt: bytes
    memory_kib: int = 0
    iterations: int = 0
    lanes: int = 0
    n: int = 0
    r: int = 0
    p: int = 0

    def to_json(self) -> dict[str, Any]:
        import base64

        d = {k: v for k, v in asdict(self).items() if v and k != "salt"}
        d["salt"] = base64.b64encode(self.salt).decode()
        return d

    @classmethod
    def from_json(cls, d: Any, *, where: str = "header") -> KdfParams:
        """Parse and bounds-check stored parameters. Raises :class:`CorruptVault`."""
        import binascii

        if not isinstance(d, dict):
            raise CorruptVault(f"{where}: KDF parameters are not an object")
        try:
            salt = b64decode_canonical(d["salt"])
            name = d["name"]
            if name == "argon2id":
                params = cls(
                    name=name,
                    salt=salt,
                    memory_kib=int(d["memory_kib"]),
                    iterations=int(d["iterations"]),
                    lanes=int(d["lanes"]),
                )
            elif name == "scrypt":
                params = cls(name=name, salt=salt, n=int(d["n"]), r=int(d["r"]), p=int(d["p"]))
            else:
                raise CorruptVault(f"{where}: unknown KDF {name!r}")
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise CorruptVault(
                f"{where}: malformed KDF parameters ({type(exc).__name__})"
            ) from None
        params.check(where=where)
        return params

    def check(self, *, where: str = "header") -> None:
        if len(self.salt) != SALT_LEN:
            raise CorruptVault(f"{where}: KDF salt must be {SALT_LEN} bytes")
        if self.name == "argon2id":
            for field, (lo, hi) in ARGON2_BOUNDS.items():
                value = getattr(self, field)
                if not lo <= value <= hi:
                    raise CorruptVault(f"{where}: Argon2id {field}={value} outside [{lo}, {hi}]")
            if self.memory_kib < 8 * self.lanes:
                raise CorruptVault(f"{where}: Argon2id memory too small for its lanes")
        else:
            if self.n <= 0 or self.n & (self.n - 1):
                raise CorruptVault(f"{where}: scrypt n must be a power of two")
            log2_n = self.n.bit_length() - 1
            checks = {"log2_n": log2_n, "r": self.r, "p": self.p}
            for field, (lo, hi) in SCRYPT_BOUNDS.items():
                if not lo <= checks[field] <= hi:
                    raise CorruptVault(
                        f"{where}: scrypt {field}={checks[field]} outside [{lo}, {hi}]"
                    )


def argon2_available() -> bool:
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        Argon2id(salt=b"\0" * SALT_LEN, length=KEY_LEN, iterations=1, lanes=1, memory_cost=8)
        return True
    except Exception:
        return False


def new_params(
    *, memory_mib: int | None = None, iterations: int | None = None, prefer: str = "argon2id"
) -> KdfParams:
    """Fresh parameters with a random salt; Argon2id when OpenSSL has it, else scrypt."""
    salt = os.urandom(SALT_LEN)
    if prefer == "argon2id" and argon2_available():
        params = KdfParams(
            name="argon2id",
            salt=salt,
            memory_kib=(memory_mib * 1024) if memory_mib else ARGON2_DEFAULT["memory_kib"],
            iterations=iterations or ARGON2_DEFAULT["iterations"],
            lanes=ARGON2_DEFAULT["lanes"],
        )
    else:
        n = SCRYPT_DEFAULT["n"]
        if memory_mib:  # scrypt memory ≈ 128 * r * n bytes
            n = 1 << max(14, min(22, (memory_mib * 1024 * 1024 // (128 * 8)).bit_length() - 1))
        params = KdfParams(name="scrypt", salt=salt, n=n, r=SCRYPT_DEFAULT["r"], p=1)
    try:
        params.check(where="KDF options")
    except CorruptVault as exc:
        raise UsageError(exc.message) from None
    return params


def derive(secret: bytes, params: KdfParams) -> bytes:
    """Stretch a passphrase into a 32-byte key-encryption key."""
    params.check()
    if params.name == "argon2id":
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        return Argon2id(
            salt=params.salt,
            length=KEY_LEN,
            iterations=params.iterations,
            lanes=params.lanes,
            memory_cost=params.memory_kib,
        ).derive(secret)
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=params.salt, length=KEY_LEN, n=params.n, r=params.r, p=params.p).derive(
        secret
    )
