"""Git objects, packfiles and pack indexes built in memory — pure functions, no I/O, no pygit2.

Why not libgit2: a 1,000-event journal commit makes ~3,600 objects, and libgit2 writes each as a
loose file (one fsync each when asked to be durable) after deflating it; zlib's per-call set-up
alone costs ~85 µs per small object on the development VM. Here every object is hashed and
framed in memory and then written in one go (``store.py``): as a single packfile for big
commits, as loose files for small ones.

The zlib streams are *stored* (uncompressed) deflate blocks: event blobs are ciphertext and
would not shrink anyway, trees shrink ~10 %, and any zlib reader (git, libgit2) inflates them.
Formats follow git's ``Documentation/gitformat-pack.txt`` (pack v2, idx v2).
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

# Object type numbers as used in pack entry headers.
COMMIT, TREE, BLOB, TAG = 1, 2, 3, 4
OFS_DELTA, REF_DELTA = 6, 7
TYPE_NAMES = {COMMIT: b"commit", TREE: b"tree", BLOB: b"blob", TAG: b"tag"}
TYPE_NUMBERS = {v: k for k, v in TYPE_NAMES.items()}

MODE_BLOB = b"100644"
MODE_TREE = b"40000"  # git writes it without a leading zero; fsck --strict insists

PACK_MAGIC = b"PACK"
IDX_MAGIC = b"\377tOc"
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" level; (0x7801 % 31 == 0)
_MAX_STORED = 0xFFFF

TreeEntries = dict[bytes, tuple[bytes, bytes]]  # name -> (mode, 20-byte id)


# ---- single objects -----------------------------------------------------------------------


def object_id(kind: int, data: bytes) -> bytes:
    """The 20-byte SHA-1 git names an object by: ``sha1("<type> <len>\\0" + data)``."""
    h = hashlib.sha1(TYPE_NAMES[kind], usedforsecurity=False)
    h.update(b" %d\0" % len(data))
    h.update(data)
    return h.digest()


def zlib_stored(data: bytes) -> bytes:
    """A valid zlib stream holding ``data`` in stored (uncompressed) deflate blocks."""
    parts = [_ZLIB_HEADER]
    n = len(data)
    pos = 0
    while True:
        chunk = data[pos : pos + _MAX_STORED]
        pos += len(chunk)
        final = 1 if pos >= n else 0
        parts.append(struct.pack("<BHH", final, len(chunk), len(chunk) ^ 0xFFFF))
        parts.append(chunk)
        if final:
            break
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(parts)


def loose_file(kind: int, data: bytes) -> bytes:
    """The bytes of a loose object file: zlib of ``"<type> <len>\\0" + data``."""
    return zlib_stored(TYPE_NAMES[kind] + b" %d\0" % len(data) + data)


def parse_loose(raw: bytes) -> tuple[int, bytes]:
    """(type, data) of a loose object file; ValueError if it is not one."""
    try:
        full = zlib.decompress(raw)
    except zlib.error:
        raise ValueError("loose object is not zlib data") from None
    nul = full.find(b"\0")
    head = full[:nul].split(b" ")
    if nul < 0 or len(head) != 2 or head[0] not in TYPE_NUMBERS or not head[1].isdigit():
        raise ValueError("loose object has a malformed header")
    data = full[nul + 1 :]
    if int(head[1]) != len(data):
        raise ValueError("loose object has the wrong length")
    return TYPE_NUMBERS[head[0]], data


# ---- trees and commits ----------------------------------------------------------------------


def _tree_key(item: tuple[bytes, tuple[bytes, bytes]]) -> bytes:
    name, (mode, _oid) = item
    return name + b"/" if mode == MODE_TREE else name


def encode_tree(entries: TreeEntries) -> bytes:
    """Serialise a tree, sorted git's way: a directory compares as its name plus ``/``."""
    if len(entries) == 1:  # most trees of a commit: a new record's folder, its shard
        for name, (mode, oid) in entries.items():
            return mode + b" " + name + b"\0" + oid
    return b"".join(
        mode + b" " + name + b"\0" + oid
        for name, (mode, oid) in sorted(entries.items(), key=_tree_key)
    )


def parse_tree(data: bytes) -> TreeEntries:
    """``name -> (mode, id)`` of a raw tree object; ValueError if malformed."""
    out: TreeEntries = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            sp = data.index(b" ", pos)
            nul = data.index(b"\0", sp)
            if nul + 21 > end:
                raise ValueError
            out[data[sp + 1 : nul]] = (data[pos:sp], data[nul + 1 : nul + 21])
            pos = nul + 21
    except ValueError:
        raise ValueError("malformed tree object") from None
    return out


def encode_commit(
    tree: bytes, parents: Iterable[bytes], ident: bytes, when: int, message: bytes
) -> bytes:
    """A commit object exactly as libgit2's ``git_commit_create`` writes it (UTC, no encoding).

    ``ident`` is ``b"name <email>"``; author and committer are the same person and time.
    """
    stamp = ident + b" %d +0000\n" % when
    lines = [b"tree " + tree.hex().encode() + b"\n"]
    lines += [b"parent " + p.hex().encode() + b"\n" for p in parents]
    lines += [b"author " + stamp, b"committer " + stamp, b"\n", message]
    return b"".join(lines)


# ---- packs ----------------------------------------------------------------------------------


def entry_header(kind: int, size: int) -> bytes:
    """A pack entry's type-and-size varint: 3 type bits, then the size 4 + 7*k bits at a time."""
    if size < 0x800:  # the common case: two bytes at most
        if size < 0x10:
            return bytes(((kind << 4) | size,))
        return bytes((0x80 | (kind << 4) | (size & 0x0F), size >> 4))
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


@dataclass(frozen=True)
class PackIndex:
    """A parsed idx v2: ids sorted, with each object's CRC32 and offset in its pack."""

    ids: list[bytes]
    crcs: list[int]
    offsets: list[int]
    pack_sha: bytes

    def __len__(self) -> int:
        return len(self.ids)


def encode_pack(objects: Iterable[tuple[bytes, int, bytes]]) -> tuple[bytes, bytes, bytes]:
    """Build ``(pack, idx, pack_sha)`` for ``(id, type, data)`` objects (no deltas).

    A repeated id is written once. Written for speed (a 1,000-event commit has ~3,600
    objects): no concatenation per object, CRC32s chained over the parts.
    """
    crc32, adler32 = zlib.crc32, zlib.adler32
    stored_head = struct.Struct("<2sBHH").pack  # zlib header + one final stored block's head
    be32 = struct.Struct(">I").pack
    parts: list[bytes] = [b""]  # the pack header goes first, once the count is known
    ids: list[bytes] = []
    crcs: list[int] = []
    offsets: list[int] = []
    seen: set[bytes] = set()
    pos = 12
    for oid, kind, data in objects:
        if oid in seen:
            continue
        seen.add(oid)
        n = len(data)
        head = entry_header(kind, n)
        if n <= _MAX_STORED:
            z_head = stored_head(_ZLIB_HEADER, 1, n, n ^ 0xFFFF)
            z_tail = be32(adler32(data))
            crc = crc32(z_tail, crc32(data, crc32(z_head, crc32(head))))
            parts += (head, z_head, data, z_tail)
            size = len(head) + 7 + n + 4
        else:
            z = zlib_stored(data)
            crc = crc32(z, crc32(head))
            parts += (head, z)
            size = len(head) + len(z)
        ids.append(oid)
        crcs.append(crc)
        offsets.append(pos)
        pos += size
    parts[0] = PACK_MAGIC + struct.pack(">II", 2, len(ids))
    body = b"".join(parts)
    pack_sha = hashlib.sha1(body, usedforsecurity=False).digest()
    return body + pack_sha, encode_idx(ids, crcs, offsets, pack_sha), pack_sha


def encode_idx(ids: list[bytes], crcs: list[int], offsets: list[int], pack_sha: bytes) -> bytes:
    """An idx v2 for the given entries (in any order; sorted here). Offsets >= 2**31 go to the
    64-bit table as git requires."""
    rows = sorted(zip(ids, crcs, offsets, strict=True))  # ids are unique: sorts by id
    fanout = [0] * 256
    for oid in ids:
        fanout[oid[0]] += 1
    total = 0
    for i in range(256):
        total += fanout[i]
        fanout[i] = total
    small: list[int] = []
    large: list[int] = []
    for _oid, _crc, off in rows:
        if off < 0x80000000:
            small.append(off)
        else:
            small.append(0x80000000 | len(large))
            large.append(off)
    n = len(rows)
    out = bytearray(IDX_MAGIC + struct.pack(">I", 2))
    out += struct.pack(">256I", *fanout)
    out += b"".join(r[0] for r in rows)
    out += struct.pack(f">{n}I", *(r[1] for r in rows))
    out += struct.pack(f">{n}I", *small)
    if large:
        out += struct.pack(f">{len(large)}Q", *large)
    out += pack_sha
    out += hashlib.sha1(out, usedforsecurity=False).digest()
    return bytes(out)


def idx_layout_ok(head: bytes, size: int) -> bool:
    """Whether an idx v2's first ``8 + 1024`` bytes (header, fan-out table) agree with its
    ``size``: a fan-out that never decreases and an object count the file has room for.

    libgit2 trusts the fan-out table: a flipped bit in it sends a lookup far past the end of
    the mapped file (a segfault, not an error). :func:`idx_intact` adds the checksum.
    """
    if len(head) < 8 + 1024 or head[:4] != IDX_MAGIC or head[4:8] != b"\0\0\0\2":
        return False
    fanout = struct.unpack_from(">256I", head, 8)
    if any(a > b for a, b in itertools.pairwise(fanout)):
        return False
    n = fanout[255]
    least = 8 + 1024 + 28 * n + 40  # ids, CRCs, 4-byte offsets, two checksums
    return least <= size <= least + 8 * n and (size - least) % 8 == 0


def idx_intact(data: bytes) -> bool:
    """An idx v2 whose layout holds (:func:`idx_layout_ok`) and whose own SHA-1 matches: no
    bit of it changed since it was written. A flipped bit in its offsets made libgit2 parse a
    pack entry from the middle of another and crash; a checksum over the file catches every
    such flip (~1 ms per MB, once per index and process)."""
    return (
        idx_layout_ok(data[: 8 + 1024], len(data))
        and hashlib.sha1(data[:-20], usedforsecurity=False).digest() == data[-20:]
    )


def parse_idx(data: bytes) -> PackIndex:
    """Parse an idx v2, checking it first (:func:`idx_intact`); ValueError if it is not a
    valid one."""
    if not idx_intact(data):
        raise ValueError("not an intact version 2 pack index (layout or checksum)")
    n = struct.unpack_from(">I", data, 8 + 4 * 255)[0]
    pos = 8 + 1024
    ids = [data[pos + 20 * i : pos + 20 * i + 20] for i in range(n)]
    pos += 20 * n
    crcs = list(struct.unpack_from(f">{n}I", data, pos))
    pos += 4 * n
    raw_offsets = struct.unpack_from(f">{n}I", data, pos)
    pos += 4 * n
    n_large = (len(data) - 40 - pos) // 8
    large = struct.unpack_from(f">{n_large}Q", data, pos) if n_large else ()
    try:
        offsets = [o if o < 0x80000000 else large[o & 0x7FFFFFFF] for o in raw_offsets]
    except IndexError:
        raise ValueError("pack index has a bad large offset") from None
    return PackIndex(ids, crcs, offsets, data[-40:-20])


def entry_type(pack: bytes | memoryview, offset: int) -> int:
    """The type number (1-4, 6, 7) of the pack entry at ``offset``."""
    return (pack[offset] >> 4) & 7
