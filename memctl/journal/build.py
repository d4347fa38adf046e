"""A commit's new objects, computed in memory from the parent's trees.

``TreeReader`` reads the parent's trees through pygit2's object database (loose or packed,
whoever wrote them) and parses them itself; ``Staged`` collects the new objects with their ids;
``build_tree`` rewrites only the trees on the paths that gain entries — a commit's cost grows
with its own size, never with the journal's.

The trees nearest the root (root, ``r``, the two upper shard levels: at most ~1,060 of them)
are rewritten by almost every big commit, so the reader keeps them parsed between commits,
keyed by object id (content-addressed, so an entry can never go stale).
"""

from __future__ import annotations

from typing import Any

import pygit2

from memctl.errors import CorruptVault

from . import gitobj
from .gitobj import MODE_BLOB, MODE_TREE, TreeEntries
from .model import parse_record_name

CACHE_DEPTH = 3  # root (0), r (1), first and second shard levels (2, 3)
CACHE_MAX = 2500  # parsed trees kept between commits; ~1,060 are live at any time

Spec = dict[bytes, "Spec | bytes"]  # name -> subtree spec, or a new blob's id


class Staged:
    """New objects in creation order, with their ids; each id once."""

    def __init__(self) -> None:
        self.objects: dict[bytes, tuple[int, bytes]] = {}

    def add(self, kind: int, data: bytes) -> bytes:
        oid = gitobj.object_id(kind, data)
        self.objects.setdefault(oid, (kind, data))
        return oid

    def items(self) -> list[tuple[bytes, int, bytes]]:
        return [(oid, kind, data) for oid, (kind, data) in self.objects.items()]

    def __len__(self) -> int:
        return len(self.objects)


class TreeReader:
    """Parsed trees by id, from a shared cache or the repository."""

    def __init__(self, repo: pygit2.Repository, cache: dict[bytes, TreeEntries]) -> None:
        self._repo = repo
        self._cache = cache
        self._local: dict[bytes, TreeEntries] = {}  # everything read during this commit

    def get(self, oid: bytes, depth: int) -> TreeEntries:
        entries = self._local.get(oid)
        if entries is None:
            entries = self._cache.get(oid)
        if entries is None:
            try:
                kind, data = self._repo.odb.read(pygit2.Oid(raw=oid))
            except (KeyError, ValueError, pygit2.GitError):
                raise CorruptVault(
                    f"journal: tree object {oid.hex()} is missing or unreadable"
                ) from None
            if int(kind) != gitobj.TREE:
                raise CorruptVault(f"journal: object {oid.hex()} is not a tree")
            try:
                entries = gitobj.parse_tree(data)
            except ValueError:
                raise CorruptVault(f"journal: tree object {oid.hex()} is malformed") from None
            if depth <= CACHE_DEPTH:
                self.remember(oid, entries)
        self._local[oid] = entries
        return entries

    def remember(self, oid: bytes, entries: TreeEntries) -> None:
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[oid] = entries

    def walk(self, root: bytes | None, names: list[bytes]) -> TreeEntries | None:
        """The tree at ``root/names…``, or None where the path does not exist (or is a file)."""
        if root is None:
            return None
        entries = self.get(root, 0)
        for depth, name in enumerate(names, start=1):
            item = entries.get(name)
            if item is None or item[0] != MODE_TREE:
                return None
            entries = self.get(item[1], depth)
        return entries

    def last_rseq(self, root: bytes | None, record_id: str) -> int:
        """The highest per-record event number in the record's folder (0 if none)."""
        rid = record_id.encode()
        folder = self.walk(root, [b"r", rid[-1:], rid[-2:-1], rid[-3:-2], rid])
        best = 0
        for name in folder or ():
            fields = parse_record_name(name.decode("utf-8", "replace"))
            if fields is not None:
                best = max(best, fields[0])
        return best


def nest(flat: dict[str, bytes]) -> Spec:
    """``{"a/b/c": id}`` -> ``{b"a": {b"b": {b"c": id}}}``."""
    root: Spec = {}
    for path, oid in flat.items():
        *dirs, name = path.encode().split(b"/")
        node: Any = root
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = oid
    return root


def build_tree(
    reader: TreeReader,
    staged: Staged,
    old: bytes | None,
    spec: Spec,
    replace: frozenset[bytes] | set[bytes] = frozenset(),
    depth: int = 0,
) -> bytes:
    """Write ``old`` plus the entries of ``spec``; return the new tree's id.

    Event paths are append-only: an existing name is an error unless listed in ``replace``
    (the manifest and its signature, at the root).
    """
    entries: TreeEntries = dict(reader.get(old, depth)) if old is not None else {}
    for name, item in spec.items():
        existing = entries.get(name)
        if isinstance(item, dict):
            if existing is not None and existing[0] != MODE_TREE:
                raise CorruptVault("journal: a directory path is taken by a file")
            sub_old = existing[1] if existing is not None else None
            entries[name] = (MODE_TREE, build_tree(reader, staged, sub_old, item, depth=depth + 1))
        else:
            if existing is not None and name not in replace:
                raise CorruptVault("journal: an event path already exists")
            entries[name] = (MODE_BLOB, item)
    oid = staged.add(gitobj.TREE, gitobj.encode_tree(entries))
    if depth <= CACHE_DEPTH:
        reader.remember(oid, entries)
    return oid
