"""The page oracle: decrypt every page of index.db and every WAL frame and search them.

An independent SQLCipher 4 page decoder (AES-256-CBC pages with a per-page IV and an HMAC tag
— SHA-256 in 16 KiB pages for vaults made now, SHA-512 in 4 KiB pages before: the header's
``cipher`` says — raw key, HMAC key = PBKDF2-HMAC-SHA512(key, salt ^ 0x3a, 2 iterations)), so
erasure is checked below SQLite: free pages, stale WAL frames and slack space included. Every
page's HMAC is verified, so a "no hit" can never come from failing to decrypt.

``fragments=n`` also searches every n-character piece of each marker: the FTS5 index stores a
term after the prefix it shares with the term before it (only the suffix is on the page), and a
separator key holds only a prefix. Markers meant for that search should be words the index's
porter stemmer leaves alone and whose pieces no other text contains (e.g. ``zqxbodyqxz``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SALT = 16
WAL_HEADER = 32
FRAME_HEADER = 24


@dataclass
class OracleReport:
    pages: int = 0
    frames: int = 0
    zero_pages: int = 0
    hits: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """A vault's page layout: its header's ``cipher`` entry, or SQLCipher 4's defaults."""

    page: int = 4096
    digest: str = "sha512"

    @property
    def reserve(self) -> int:  # the IV and the HMAC tag, rounded up to AES blocks
        tag = hashlib.new(self.digest).digest_size
        return (16 + tag + 15) // 16 * 16

    @property
    def tag(self) -> int:
        return hashlib.new(self.digest).digest_size


def layout_of(vault_path: Path) -> Layout:
    import json

    cipher = json.loads((vault_path / "header.json").read_text()).get("cipher")
    if cipher is None:
        return Layout()
    return Layout(cipher["page_size"], cipher["hmac"].removeprefix("HMAC_").lower())


def _hmac_key(key: bytes, salt: bytes) -> bytes:
    # the HMAC key is derived with cipher_kdf_algorithm, PBKDF2-HMAC-SHA512 in SQLCipher 4
    return hashlib.pbkdf2_hmac("sha512", key, bytes(b ^ 0x3A for b in salt), 2, 32)


def decrypt_page(key: bytes, hkey: bytes, raw: bytes, pgno: int, lay: Layout) -> bytes:
    offset = SALT if pgno == 1 else 0
    end = lay.page - lay.reserve
    body = raw[offset:end]
    iv = raw[end : end + 16]
    tag = raw[end + 16 : end + 16 + lay.tag]
    expect = hmac.new(hkey, body + iv + pgno.to_bytes(4, "little"), lay.digest).digest()
    if not hmac.compare_digest(expect, tag):
        raise AssertionError(f"page {pgno}: HMAC mismatch — the oracle cannot read this page")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(body) + dec.finalize()


def scan(
    vault_path: Path, key: bytes, markers: list[str], *, fragments: int | None = None
) -> OracleReport:
    """Decrypt index.db and index.db-wal with the SQLCipher key; report where markers occur.

    A hit reads ``"<marker> in <where>"``, or ``"<marker> (fragment '<piece>') in <where>"``.
    """
    report = OracleReport()
    lay = layout_of(vault_path)
    PAGE = lay.page
    db = (vault_path / "index.db").read_bytes()
    salt = db[:SALT]
    hkey = _hmac_key(key, salt)
    needles: list[tuple[bytes, str]] = [(m.encode(), m) for m in markers]
    if fragments:
        for m in markers:
            for i in range(len(m) - fragments + 1):
                piece = m[i : i + fragments]
                if piece != m:
                    needles.append((piece.encode(), f"{m} (fragment {piece!r})"))

    # many pieces of one length (<= 8 bytes): every n-byte window of the pages as one integer,
    # looked up with numpy 256 pages at a time, instead of one search per piece and page
    n = fragments or 0
    many = len(needles) > 64 and 0 < n <= 8
    pieces: dict[bytes, list[str]] = {}
    for k, label in needles if many else []:
        if len(k) == n:
            pieces.setdefault(k, []).append(label)
    others = [(k, label) for k, label in needles if k not in pieces]
    batch: list[tuple[bytes, str]] = []

    def flush() -> None:
        import numpy as np

        sep = bytes(n - 1)  # a window that crosses from one page into the next holds a NUL
        joined = sep.join(p for p, _ in batch)
        starts = np.cumsum([0] + [len(p) + len(sep) for p, _ in batch[:-1]])
        a = np.frombuffer(joined, dtype=np.uint8).astype(np.uint64)
        m = len(a) - n + 1
        windows = np.zeros(m, dtype=np.uint64)
        for k in range(n):
            windows |= a[k : k + m] << np.uint64(8 * k)
        wanted = np.sort(np.array([int.from_bytes(k, "little") for k in pieces], dtype=np.uint64))
        at = np.minimum(np.searchsorted(wanted, windows), len(wanted) - 1)
        found: dict[tuple[int, bytes], None] = {}  # one hit per piece and page, in order
        for i in np.flatnonzero(wanted[at] == windows).tolist():
            j = int(np.searchsorted(starts, i, side="right")) - 1
            found[(j, joined[i : i + n])] = None
        for j, piece in found:
            report.hits.extend(f"{label} in {batch[j][1]}" for label in pieces[piece])
        batch.clear()

    def check(plain: bytes, where: str) -> None:
        for needle, label in others:
            if needle in plain:
                report.hits.append(f"{label} in {where}")
        if pieces:
            batch.append((plain, where))
            if len(batch) >= 256:
                flush()

    for i in range(len(db) // PAGE):
        raw = db[i * PAGE : (i + 1) * PAGE]
        if raw == bytes(PAGE):
            report.zero_pages += 1
            continue
        check(decrypt_page(key, hkey, raw, i + 1, lay), f"index.db page {i + 1}")
        report.pages += 1
    wal_path = vault_path / "index.db-wal"
    if wal_path.exists():
        wal = wal_path.read_bytes()
        pos = WAL_HEADER
        while pos + FRAME_HEADER + PAGE <= len(wal):
            pgno = int.from_bytes(wal[pos : pos + 4], "big")
            raw = wal[pos + FRAME_HEADER : pos + FRAME_HEADER + PAGE]
            check(decrypt_page(key, hkey, raw, pgno, lay), f"WAL frame for page {pgno} @{pos}")
            report.frames += 1
            pos += FRAME_HEADER + PAGE
    if batch:
        flush()
    return report
