"""Walk the journal's whole first-parent history and check everything that can be checked.

Per commit, in this order (the first failure is that commit's problem):
1. linear history (one parent at most) and only the known names at the tree's root;
2. the manifest's Ed25519 signature;
3. the manifest's shape;
4. the tree diff from the parent is exactly the listed events (added, with the listed blob ids)
   plus the new manifest and signature — nothing else added, changed or removed;
5. each event: its path matches its fields and this commit's sequence number, its per-record
   number follows on, its blob's key class, HMAC and (where the key is known) AEAD tag;
6. the chain: ``seq`` is the parent's + 1 and ``prev`` is the parent manifest's signature;
7. the sealed metadata decrypts; the commit message and times are the ones the manifest implies.

What verify cannot see alone: a journal cut back to an older head (or both journal and database
restored from the same older backup). The caller compares :meth:`Journal.head_state` with what
its database recorded for that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pygit2

from memctl.errors import MemctlError

from . import events as ev
from .model import (
    KEY_DEK,
    KEY_VAULT,
    MANIFEST,
    ROOT_DIRS,
    ROOT_NAMES,
    SIGNATURE,
    Problem,
    VerifyReport,
    check_op,
    commit_message,
    parse_event_path,
    parse_time,
)
from .repo import _last_rseq, _manifest_blobs

if TYPE_CHECKING:
    from .repo import Journal


class _Bad(Exception):
    """One commit's first problem, raised inside the per-commit check."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


def verify(
    journal: Journal,
    *,
    deks: Callable[[str], bytes | None] | None = None,
    max_problems: int = 20,
) -> VerifyReport:
    """Verify every commit from the root to the head; return a report (oldest problem first).

    ``deks(record_id)`` returns a record's DEK, or None when it is gone (erased); with it every
    readable record event is also decrypted. Without it only the signed HMACs vouch for them.
    """
    repo: Any = journal.repo  # pygit2's stubs type repo[oid] as a bare Object
    head = journal.head()
    report = VerifyReport(ok=True, head=head, seq=0)
    if head is None:
        return report
    chain: list[pygit2.Oid] = []  # first-parent ids, newest first
    oid = pygit2.Oid(hex=head)
    while True:
        try:
            commit = repo[oid]
        except (KeyError, ValueError, pygit2.GitError):
            child = str(chain[-1]) if chain else head
            reason = "parent commit object is missing" if chain else "head commit is missing"
            report.problems.append(Problem(child, None, None, reason))
            report.ok = False
            return report
        chain.append(oid)
        if not commit.parent_ids:
            break
        oid = commit.parent_ids[0]
    chain.reverse()

    state = _State(journal, deks)
    for oid in chain:
        commit = repo[oid]
        report.commits_checked += 1
        state.claimed_seq = None
        problem: tuple[str | None, str] | None = None
        try:
            _check_commit(state, commit, report)
        except _Bad as bad:
            problem = (bad.path, bad.reason)
        except MemctlError as exc:  # malformed data deep inside; messages name no content
            problem = (None, exc.message)
        except (KeyError, ValueError, pygit2.GitError):
            problem = (None, "a git object of this commit is missing or unreadable")
        seq = state.claimed_seq if state.claimed_seq is not None else state.prev_seq + 1
        if problem is not None and len(report.problems) < max_problems:
            report.problems.append(Problem(str(oid), seq, *problem))
        # Continue the chain from what this commit claims, so one bad commit is one problem.
        _raw, sig = _manifest_blobs(commit)
        state.prev_sig = sig.hex() if sig is not None else None
        state.prev_seq = seq
        try:
            state.prev_tree = commit.tree
        except (KeyError, ValueError, pygit2.GitError):
            state.prev_tree = None
    report.seq = state.prev_seq
    report.ok = not report.problems
    return report


class _State:
    def __init__(self, journal: Journal, deks: Callable[[str], bytes | None] | None) -> None:
        self.repo: Any = journal.repo
        self.keys = journal.keys
        self.public = journal._public
        self.deks = deks
        self.dek_cache: dict[str, bytes | None] = {}
        self.prev_sig: str | None = None
        self.prev_seq = 0
        self.claimed_seq: int | None = None  # the seq of the commit being checked, once known
        self.prev_tree: pygit2.Tree | None = None

    def dek(self, record_id: str) -> bytes | None:
        if self.deks is None:
            return None
        if record_id not in self.dek_cache:
            self.dek_cache[record_id] = self.deks(record_id)
        return self.dek_cache[record_id]


def _check_commit(st: _State, commit: pygit2.Commit, report: VerifyReport) -> None:
    """Raise _Bad for the commit's first problem."""
    if len(commit.parent_ids) > 1:
        raise _Bad("merge commit: journal history must be linear")
    tree = commit.tree
    for entry in tree:
        kind_ok = entry.type_str == ("tree" if entry.name in ROOT_DIRS else "blob")
        if entry.name not in ROOT_NAMES or not kind_ok:
            raise _Bad("unexpected entry at the root of the tree", entry.name)

    raw, sig = _manifest_blobs(commit)
    if raw is None or sig is None:
        raise _Bad("manifest or its signature is missing", MANIFEST)
    if not ev.signature_ok(st.public, raw, sig):
        raise _Bad("manifest signature does not verify (altered, forged or wrong key)", MANIFEST)
    try:
        m = ev.decode_manifest(raw)
    except MemctlError as exc:
        raise _Bad(exc.message, MANIFEST) from None
    seq: int = m["seq"]
    st.claimed_seq = seq
    try:
        check_op(m["op"])
        when = parse_time(m["time"])
    except (MemctlError, ValueError):
        raise _Bad("manifest has a malformed operation or time", MANIFEST) from None

    listed = {e["path"]: e for e in m["events"]}
    if len(listed) != len(m["events"]) or not listed:
        raise _Bad("manifest lists no events or one path twice", MANIFEST)
    _check_diff(st, tree, listed)
    next_rseq: dict[str, int] = {}
    for path, e in listed.items():
        _check_event(st, seq, m["time"][:10], path, e, next_rseq, report)

    if seq != st.prev_seq + 1 or m["prev"] != st.prev_sig:
        raise _Bad(
            f"chain broken: expected seq {st.prev_seq + 1} following the parent's signature "
            "(a commit was removed, reordered or replayed)",
            MANIFEST,
        )
    try:
        ev.open_meta(st.keys.vault_key, seq, m["prev"], m["sealed"])
    except MemctlError:
        raise _Bad("sealed metadata does not decrypt", MANIFEST) from None
    n_records = len({e["record"] for e in m["events"] if e["record"] is not None})
    expected = commit_message(m["op"], seq, m["time"], len(m["events"]), n_records)
    stamp = int(when.timestamp())
    if commit.message != expected:
        raise _Bad("commit message differs from the signed manifest")
    for who in (commit.author, commit.committer):
        if who.time != stamp or who.offset != 0:
            raise _Bad("commit time differs from the signed manifest")


def _check_diff(st: _State, tree: pygit2.Tree, listed: dict[str, dict[str, Any]]) -> None:
    seen: set[str] = set()
    for status, path, oid, mode in _tree_changes(st.prev_tree, tree, ""):
        if path in (MANIFEST, SIGNATURE):
            if status not in ("A", "M"):
                raise _Bad("manifest was removed or retyped", path)
            seen.add(path)
            continue
        e = listed.get(path)
        if e is None:
            raise _Bad(f"change ({status}) not listed in the signed manifest", path)
        if status != "A" or mode != pygit2.GIT_FILEMODE_BLOB:
            raise _Bad(f"listed event was not simply added ({status})", path)
        if str(oid) != e["blob"]:
            raise _Bad("blob differs from the one the manifest lists", path)
        seen.add(path)
    for path in (MANIFEST, SIGNATURE, *listed):
        if path not in seen:
            why = "manifest not renewed (replayed)" if path in (MANIFEST, SIGNATURE) else None
            raise _Bad(why or "listed event is not in this commit's changes", path)


def _tree_changes(old: Any, new: Any, prefix: str) -> Iterator[tuple[str, str, pygit2.Oid, int]]:
    """(status A/M/D/T, path, new id, new mode) for every file that differs, recursively.

    Subtrees with the same id are skipped without being read, so the cost is the size of the
    trees on the changed paths — not of the whole tree (libgit2's tree diff walks it all).
    """
    before = {e.name: e for e in old} if old is not None else {}
    for e in new if new is not None else ():
        o = before.pop(e.name, None)
        path = prefix + e.name
        is_tree = e.type_str == "tree"
        if o is not None and o.id == e.id and o.filemode == e.filemode:
            continue
        if o is None:
            if is_tree:
                yield from _tree_changes(None, e, path + "/")
            else:
                yield "A", path, e.id, e.filemode
        elif is_tree and o.type_str == "tree":
            yield from _tree_changes(o, e, path + "/")
        elif not is_tree and o.type_str != "tree":
            yield "M", path, e.id, e.filemode
        else:
            yield "T", path, e.id, e.filemode
    for name, o in before.items():
        yield "D", prefix + name, o.id, o.filemode


def _check_event(
    st: _State,
    seq: int,
    day: str,
    path: str,
    e: dict[str, Any],
    next_rseq: dict[str, int],
    report: VerifyReport,
) -> None:
    fields = parse_event_path(path)
    if fields is None or fields["op"] != e["op"] or fields["record"] != e["record"]:
        raise _Bad("event path does not match its listed fields", path)
    if fields["jseq"] != seq:
        raise _Bad("event path carries another commit's sequence number", path)
    if e["record"] is None:
        if fields["date"] != day or e["key"] != KEY_VAULT:
            raise _Bad("vault event has the wrong date folder or key", path)
    else:
        rid = e["record"]
        if rid not in next_rseq:
            next_rseq[rid] = _last_rseq(st.prev_tree, rid) + 1
        if fields["rseq"] != next_rseq[rid]:
            raise _Bad("record event number does not follow on", path)
        next_rseq[rid] += 1
    try:
        blob = st.repo[e["blob"]].data
    except (KeyError, ValueError, pygit2.GitError):
        raise _Bad("event blob object is missing or unreadable", path) from None
    report.events_checked += 1
    try:
        key_class = ev.blob_key_class(blob)
    except MemctlError:
        raise _Bad("event blob has an unknown format", path) from None
    if key_class != e["key"]:
        raise _Bad("event blob's key class differs from the manifest", path)
    if not _mac_equal(ev.blob_mac(st.keys.mac_key, path, blob), e["mac"]):
        raise _Bad("event blob HMAC does not verify", path)
    key = st.keys.vault_key if key_class == KEY_VAULT else st.dek(e["record"])
    if key is None:
        report.events_unreadable += 1
        return
    try:
        ev.open_event(key, path, blob)
    except MemctlError:
        which = "its record's DEK" if key_class == KEY_DEK else "the vault key"
        raise _Bad(f"event does not decrypt with {which}", path) from None
    report.events_decrypted += 1


def _mac_equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())
