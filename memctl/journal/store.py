"""Writing objects and the head reference durably, with as few fsyncs as the data allows.

libgit2's ``ENABLE_FSYNC_GITDIR`` fsyncs every object file and its directory: ~7,000 fsyncs for
a 1,000-event commit. Here a big commit is one packfile (pack, idx, directory: 3 fsyncs) and a
small one a few loose files (each fsynced, then each new directory entry once).

The crash-safety argument, in write order:
1. objects: written to a temporary name, fsynced, renamed into place, their directory fsynced —
   a pack's ``.pack`` before its ``.idx`` (readers discover packs by their index);
2. the head: ``refs/heads/main.lock`` created exclusively (git's and libgit2's own lock), the
   current value compared with the expected one (compare-and-swap), the new value written and
   fsynced, renamed over ``refs/heads/main``, ``refs/heads`` fsynced.
A crash before 2 leaves unreferenced objects (harmless; ``git gc`` prunes them); after 2 the
commit and everything it names are on disk.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from . import gitobj

_FILE_MODE = 0o444  # git's own mode for objects and packs (the umask narrows it further)
TMP_PREFIXES = ("tmp_pack_memctl_", "tmp_idx_memctl_", "tmp_obj_memctl_")


class RefMismatch(Exception):
    """The reference is locked by another writer or no longer has the expected value."""


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes | memoryview, durable: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ---- objects --------------------------------------------------------------------------------


def install_pack(
    gitdir: Path, pack: bytes | memoryview, idx: bytes, pack_sha: bytes, *, durable: bool
) -> Path:
    """Put a finished pack and its index in ``objects/pack``; return the ``.pack`` path."""
    pack_dir = gitdir / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(8)
    tmp_pack = str(pack_dir / f"tmp_pack_memctl_{tag}")
    tmp_idx = str(pack_dir / f"tmp_idx_memctl_{tag}")
    final = pack_dir / f"pack-{pack_sha.hex()}"
    try:
        _write_file(tmp_pack, pack, durable)
        _write_file(tmp_idx, idx, durable)
        os.replace(tmp_pack, f"{final}.pack")  # the pack first: the idx makes it visible
        os.replace(tmp_idx, f"{final}.idx")
    except BaseException:
        _unlink_quietly(tmp_pack)
        _unlink_quietly(tmp_idx)
        raise
    if durable:
        fsync_dir(pack_dir)
    return final.with_suffix(".pack")


def write_pack(gitdir: Path, objects: Iterable[tuple[bytes, int, bytes]], *, durable: bool) -> Path:
    """Write ``(id, type, data)`` objects as one new packfile + idx; return the ``.pack`` path."""
    pack, idx, pack_sha = gitobj.encode_pack(objects)
    return install_pack(gitdir, pack, idx, pack_sha, durable=durable)


def write_loose(
    gitdir: Path, objects: Iterable[tuple[bytes, int, bytes]], *, durable: bool
) -> None:
    """Write objects as loose files ``objects/xx/yyyy…``: each fsynced, then each directory once."""
    objdir = gitdir / "objects"
    new_dirs = False
    touched: set[str] = set()
    for oid, kind, data in objects:
        hexid = oid.hex()
        d = str(objdir / hexid[:2])
        final = os.path.join(d, hexid[2:])
        if os.path.exists(final):
            continue  # same id, same content: nothing to write
        if d not in touched and not os.path.isdir(d):
            os.makedirs(d, exist_ok=True)
            new_dirs = True
        tmp = os.path.join(d, f"tmp_obj_memctl_{secrets.token_hex(8)}")
        try:
            _write_file(tmp, gitobj.loose_file(kind, data), durable)
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        touched.add(d)
    if durable:
        if new_dirs:
            fsync_dir(objdir)
        for d in touched:
            fsync_dir(d)


# ---- the reference --------------------------------------------------------------------------


def read_ref(gitdir: Path, name: str) -> str | None:
    """A direct reference's value (hex) from its loose file, else from ``packed-refs``."""
    try:
        text = (gitdir / name).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    if text is not None:
        if text.startswith("ref:"):
            raise RefMismatch(f"{name} is a symbolic reference")
        return text
    try:
        lines = (gitdir / "packed-refs").read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        if line[:1] in ("#", "^"):
            continue
        value, _, ref = line.partition(" ")
        if ref == name:
            return value
    return None


def update_ref(gitdir: Path, name: str, old: str | None, new: str, *, durable: bool) -> None:
    """Compare-and-swap ``name`` from ``old`` (None: must not exist) to ``new``.

    Uses git's lock protocol (``<ref>.lock`` created with O_EXCL, renamed over the ref), so it
    excludes git, libgit2 and other memctl writers alike. RefMismatch if locked or moved.
    """
    path = gitdir / name
    lock = f"{path}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise RefMismatch(f"{name} is locked by another writer") from None
    renamed = False
    try:
        try:
            current = read_ref(gitdir, name)
            if current != old:
                raise RefMismatch(f"{name} moved")
            os.write(fd, f"{new}\n".encode("ascii"))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(lock, path)
        renamed = True
    finally:
        if not renamed:
            _unlink_quietly(lock)
    if durable:
        fsync_dir(path.parent)
