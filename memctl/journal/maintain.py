"""Keeping the object store small: loose objects into a pack, many packs into one.

Every big commit adds a packfile and every small one ~10 loose files. Lookups get slower with
the number of packs (each miss is a binary search in every index), so ``maintain``:

1. packs the loose objects once there are many (estimated like git's ``gc.auto``: the count in
   ``objects/17`` times 256), then deletes the loose files the new pack holds;
2. rolls packs up *geometrically* (git's ``repack --geometric=2``) once there are more than
   ``max_packs``: packs sorted by object count, the smallest ones merged until the rest form a
   progression where each pack is at least twice the one before. Each object is rewritten
   O(log n) times over the journal's life, not once per consolidation.

Merging copies each pack entry's bytes as they are — no inflate, no re-deflate, no delta search
(libgit2's PackBuilder takes ~110 µs an object here; copying takes well under 1 µs). Entries of
a pack with offset deltas are copied contiguously and whole, so the relative offsets stay right.
Every source pack's SHA-1 checksum is verified before any of it is copied.

Safety with concurrent readers and writers: the new pack is fsynced and renamed into place
(``.pack`` before ``.idx``) before anything is deleted; only packs and loose objects whose every
id is in the new pack are deleted; a reader that had indexed a deleted pack fails to open it and
falls back to the new one (libgit2 and git both rescan ``objects/pack`` on a miss). Packs with a
``.keep`` file are left alone. One maintainer at a time (``flock`` on ``memctl-maintain.lock``).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from memctl.errors import CorruptVault

from . import gitobj, store

LOCK_NAME = "memctl-maintain.lock"
_HEX2 = re.compile(r"^[0-9a-f]{2}$")
_HEX38 = re.compile(r"^[0-9a-f]{38}$")
_PACK_SIDECARS = (".idx", ".pack", ".rev", ".bitmap", ".mtimes")
_STALE_TMP_S = 3600.0  # a temporary file this old belongs to a writer that died


@dataclass
class MaintainReport:
    """What one :meth:`Journal.maintain` run did."""

    loose_packed: int = 0  # loose objects moved into a new pack (and deleted)
    packs_merged: int = 0  # packs rolled up into one
    objects_merged: int = 0  # objects in the rolled-up pack
    packs_after: int = 0
    skipped: str | None = None  # why nothing was done (another maintainer running)
    removed: list[str] = field(default_factory=list)  # pack names deleted


@dataclass
class _Pack:
    stem: Path  # objects/pack/pack-<hex>, without suffix
    count: int  # objects, from the index's fan-out table
    _index: gitobj.PackIndex | None = None

    @property
    def index(self) -> gitobj.PackIndex:
        """The whole index, read and checksum-verified on first use (only for packs merged)."""
        if self._index is None:
            try:
                self._index = gitobj.parse_idx(self.stem.with_suffix(".idx").read_bytes())
            except ValueError:
                raise CorruptVault(f"journal: pack index {self.stem.name}.idx is corrupt") from None
            if len(self._index) != self.count:
                raise CorruptVault(f"journal: pack index {self.stem.name}.idx changed")
        return self._index


# ---- cheap checks (after every commit) ------------------------------------------------------


def count_packs(gitdir: Path) -> int:
    try:
        return sum(1 for n in os.listdir(gitdir / "objects" / "pack") if n.endswith(".idx"))
    except FileNotFoundError:
        return 0


def estimate_loose(gitdir: Path) -> int:
    """git's estimate: the loose objects in ``objects/17``, times 256."""
    try:
        return 256 * sum(1 for n in os.listdir(gitdir / "objects" / "17") if _HEX38.match(n))
    except FileNotFoundError:
        return 0


# ---- the run --------------------------------------------------------------------------------


def maintain(
    gitdir: Path,
    *,
    max_packs: int,
    max_loose: int,
    force: bool = False,
    durable: bool = True,
) -> MaintainReport:
    """Pack loose objects and roll packs up as described above; ``force`` does both fully."""
    report = MaintainReport()
    with _exclusive(gitdir) as got:
        if not got:
            report.skipped = "another process is maintaining the journal"
            report.packs_after = count_packs(gitdir)
            return report
        _remove_stale_temporaries(gitdir)
        if force or estimate_loose(gitdir) > max_loose:
            report.loose_packed = pack_loose(gitdir, durable=durable)
        packs = list_packs(gitdir)
        chosen: list[_Pack] = []
        if force and len(packs) > 1:
            chosen = packs
        elif len(packs) > max_packs:
            chosen = choose_rollup(packs) or packs
        if len(chosen) > 1:
            merged, removed = merge_packs(gitdir, chosen, durable=durable)
            report.packs_merged = len(removed)
            report.objects_merged = merged
            report.removed = removed
        report.packs_after = count_packs(gitdir)
    return report


@contextlib.contextmanager
def _exclusive(gitdir: Path) -> Iterator[bool]:
    import fcntl

    fd = os.open(gitdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temporaries(gitdir: Path) -> None:
    now = time.time()
    objdir = gitdir / "objects"
    dirs = [objdir / "pack"] + [objdir / d for d in os.listdir(objdir) if _HEX2.match(d)]
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(d):
                if name.startswith(store.TMP_PREFIXES):
                    p = d / name
                    with contextlib.suppress(FileNotFoundError):
                        if now - p.stat().st_mtime > _STALE_TMP_S:
                            p.unlink()


# ---- loose objects ---------------------------------------------------------------------------


def _loose_objects(gitdir: Path) -> Iterator[tuple[bytes, Path]]:
    objdir = gitdir / "objects"
    for d in sorted(os.listdir(objdir)):
        if not _HEX2.match(d):
            continue
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(objdir / d):
                if _HEX38.match(name):
                    yield bytes.fromhex(d + name), objdir / d / name


def pack_loose(gitdir: Path, *, durable: bool) -> int:
    """Move every sound loose object into one new pack; return how many were moved.

    A loose file that does not inflate or does not hash to its name is left where it is (it is
    damage for ``verify`` and ``git fsck`` to report, not something to launder into a pack).
    """
    objects: list[tuple[bytes, int, bytes]] = []
    paths: list[Path] = []
    for oid, path in _loose_objects(gitdir):
        try:
            kind, data = gitobj.parse_loose(path.read_bytes())
        except (OSError, ValueError):
            continue
        if gitobj.object_id(kind, data) != oid:
            continue
        objects.append((oid, kind, data))
        paths.append(path)
    if not objects:
        return 0
    store.write_pack(gitdir, objects, durable=durable)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return len(paths)


# ---- packs -----------------------------------------------------------------------------------


def list_packs(gitdir: Path) -> list[_Pack]:
    """Every pack with a readable index and no ``.keep``, smallest first."""
    pack_dir = gitdir / "objects" / "pack"
    out: list[_Pack] = []
    try:
        names = sorted(os.listdir(pack_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not (name.startswith("pack-") and name.endswith(".idx")):
            continue
        stem = pack_dir / name[: -len(".idx")]
        if stem.with_suffix(".keep").exists() or not stem.with_suffix(".pack").exists():
            continue
        try:
            with open(stem.with_suffix(".idx"), "rb") as f:
                head = f.read(8 + 1024)
        except FileNotFoundError:
            continue  # removed by someone else meanwhile
        if len(head) < 8 + 1024 or head[:4] != gitobj.IDX_MAGIC or head[4:8] != b"\0\0\0\2":
            raise CorruptVault(f"journal: pack index {name} is corrupt")
        (count,) = struct.unpack_from(">I", head, 8 + 1020)
        out.append(_Pack(stem, count))
    out.sort(key=lambda p: (p.count, p.stem.name))
    return out


def choose_rollup(packs: list[_Pack], factor: int = 2) -> list[_Pack]:
    """git's geometric repack: the smallest packs to merge so the rest form a progression."""
    n = len(packs)
    i = n - 1
    while i > 0 and packs[i].count >= factor * packs[i - 1].count:
        i -= 1
    split = i + 1 if i > 0 else 0
    total = sum(p.count for p in packs[:split])
    while split < n and packs[split].count < factor * total:
        total += packs[split].count
        split += 1
    return packs[:split] if split > 1 else []


def merge_packs(gitdir: Path, packs: list[_Pack], *, durable: bool) -> tuple[int, list[str]]:
    """Copy ``packs`` into one new pack, then delete the ones it fully contains.

    Returns (objects in the new pack, names of the packs removed).
    """
    pack_dir = gitdir / "objects" / "pack"
    tmp = pack_dir / f"tmp_pack_memctl_{secrets.token_hex(8)}"
    tmp_idx = pack_dir / f"tmp_idx_memctl_{secrets.token_hex(8)}"
    ids: list[bytes] = []
    crcs: list[int] = []
    offsets: list[int] = []
    with contextlib.ExitStack() as stack:
        maps: dict[Path, mmap.mmap] = {}
        for p in packs:
            f = stack.enter_context(open(p.stem.with_suffix(".pack"), "rb"))
            maps[p.stem] = stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        plan = _plan(packs, maps)
        count = sum(p.count if rows is None else len(rows) for p, rows in plan)
        sha = hashlib.sha1(usedforsecurity=False)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            with open(fd, "wb") as out:
                head = gitobj.PACK_MAGIC + struct.pack(">II", 2, count)
                out.write(head)
                sha.update(head)
                pos = len(head)
                for p, rows in plan:
                    with memoryview(maps[p.stem]) as view:
                        if rows is None:  # the whole pack, in one piece
                            body = view[12:-20]
                            shift = pos - 12
                            ids += p.index.ids
                            crcs += p.index.crcs
                            offsets += [o + shift for o in p.index.offsets]
                            out.write(body)
                            sha.update(body)
                            pos += len(body)
                            body.release()
                            continue
                        for oid, crc, start, end in rows:
                            chunk = view[start:end]
                            out.write(chunk)
                            sha.update(chunk)
                            ids.append(oid)
                            crcs.append(crc)
                            offsets.append(pos)
                            pos += end - start
                            chunk.release()
                pack_sha = sha.digest()
                out.write(pack_sha)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            idx = gitobj.encode_idx(ids, crcs, offsets, pack_sha)
            store._write_file(str(tmp_idx), idx, durable)
            final = pack_dir / f"pack-{pack_sha.hex()}"
            os.replace(tmp, final.with_suffix(".pack"))
            os.replace(tmp_idx, final.with_suffix(".idx"))
        except BaseException:
            for t in (tmp, tmp_idx):
                with contextlib.suppress(FileNotFoundError):
                    t.unlink()
            raise
    if durable:
        store.fsync_dir(pack_dir)
    kept = set(ids)
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        (pack_dir / "multi-pack-index").unlink()  # it would name packs about to go
    for p, _rows in plan:
        if p.stem == final or not kept.issuperset(p.index.ids):
            continue
        for suffix in _PACK_SIDECARS:
            with contextlib.suppress(FileNotFoundError):
                p.stem.with_suffix(suffix).unlink()
        removed.append(p.stem.name)
    return len(ids), removed


_Rows = list[tuple[bytes, int, int, int]]  # (id, crc, start, end) in pack order


def _plan(packs: list[_Pack], maps: dict[Path, mmap.mmap]) -> list[tuple[_Pack, _Rows | None]]:
    """Which packs to copy whole (rows None) and which entries of the others.

    Every source pack's checksum is verified first: damage is reported, never copied into a
    new pack under a fresh, valid checksum. Biggest first, a pack sharing no id with those
    before it is copied whole; one that does skips the ids already taken, unless it holds
    offset deltas (whose relative offsets forbid gaps): then it is left out of this merge.
    Repeated ids are rare (a crash between a merge's rename and its deletions) and small.
    """
    seen: set[bytes] = set()
    plan: list[tuple[_Pack, _Rows | None]] = []
    for p in sorted(packs, key=lambda p: -p.count):  # biggest first: copied whole
        data = maps[p.stem]
        if len(data) < 32 or data[:4] != gitobj.PACK_MAGIC:
            raise CorruptVault(f"journal: {p.stem.name}.pack is not a pack")
        (n,) = struct.unpack_from(">I", data, 8)
        if n != p.count or data[-20:] != p.index.pack_sha:
            raise CorruptVault(f"journal: {p.stem.name}.pack does not match its index")
        with memoryview(data) as view, view[:-20] as body:
            if hashlib.sha1(body, usedforsecurity=False).digest() != p.index.pack_sha:
                raise CorruptVault(f"journal: {p.stem.name}.pack fails its checksum")
        if seen.isdisjoint(p.index.ids):
            plan.append((p, None))
        elif any((data[o] >> 4) & 7 == gitobj.OFS_DELTA for o in p.index.offsets):
            continue  # duplicates would have to go, and offset deltas forbid gaps
        else:
            plan.append((p, [r for r in _rows(p, len(data)) if r[0] not in seen]))
        seen.update(p.index.ids)
    return plan


def _rows(p: _Pack, size: int) -> _Rows:
    idx = p.index
    order = sorted(range(len(idx)), key=idx.offsets.__getitem__)
    ends = [idx.offsets[i] for i in order[1:]] + [size - 20]
    return [
        (idx.ids[i], idx.crcs[i], idx.offsets[i], end) for i, end in zip(order, ends, strict=True)
    ]
