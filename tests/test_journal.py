"""The journal: round trips, crypto-shredding, no plaintext in git, tamper evidence, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memctl.errors import AuthenticationError, CorruptVault, UsageError, VaultNotFound
from memctl.ids import new_ulid as make_ulid
from memctl.journal import Event, Journal, JournalHeadMoved, JournalKeys
from memctl.journal.events import Signer
from memctl.journal.model import REF, record_dir

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git binary not installed")
MARK = "ZQXJ-marker-7731"  # must never appear in clear anywhere in the journal


def new_keys() -> JournalKeys:
    return JournalKeys(sign_seed=os.urandom(32), mac_key=os.urandom(32), vault_key=os.urandom(32))


@pytest.fixture
def keys() -> JournalKeys:
    return new_keys()


@pytest.fixture
def journal(tmp_path: Path, keys: JournalKeys) -> Journal:
    return Journal.create(tmp_path / "journal", keys)


class History:
    """A small journal with three commits and known record ids and keys."""

    def __init__(self, journal: Journal) -> None:
        self.j = journal
        self.ids = [make_ulid() for _ in range(3)]
        self.deks = {rid: os.urandom(32) for rid in self.ids}
        t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
        self.commits = [
            journal.commit(
                "ingest",
                [
                    Event("created", rid, {"text": f"{MARK} note {i}"}, self.deks[rid])
                    for i, rid in enumerate(self.ids)
                ],
                actor="cron:mail",
                db_state={"seq": 1, "records": 3, "mac": MARK},
                when=t0,
            ),
            journal.commit(
                "update",
                [Event("updated", self.ids[0], {"text": f"{MARK} v2"}, self.deks[self.ids[0]])],
                actor=f"mcp:{MARK}-client",
                db_state={"seq": 2, "records": 3, "mac": "bb"},
                when=t0 + timedelta(minutes=1),
            ),
            journal.commit(
                "policy",
                [Event("policy-set", None, {"client": f"{MARK}", "read_only": True})],
                actor="cli",
                db_state={"seq": 3, "records": 3, "mac": "cc"},
                when=t0 + timedelta(minutes=2),
            ),
        ]


@pytest.fixture
def hist(journal: Journal) -> History:
    return History(journal)


@pytest.fixture
def packed(tmp_path: Path, keys: JournalKeys) -> History:
    """The same history with every commit written as one packfile."""
    j = Journal.create(tmp_path / "packed", keys)
    j.pack_min_events = 1
    return History(j)


# ---- attacker tooling: rewrite history with plain pygit2, keeping git's hashes consistent ------


def _changes(repo: pygit2.Repository, commit: pygit2.Commit) -> dict[str, pygit2.Oid]:
    """Paths a commit added or modified relative to its first parent."""
    parent = repo[commit.parent_ids[0]].tree if commit.parent_ids else None
    diff = (
        commit.tree.diff_to_tree(swap=True) if parent is None else parent.diff_to_tree(commit.tree)
    )
    return {d.new_file.path: d.new_file.id for d in diff.deltas if d.status_char() in "AM"}


def _apply(repo: pygit2.Repository, tree: pygit2.Tree | None, flat: dict[str, pygit2.Oid]):
    nested: dict = {}
    for path, oid in flat.items():
        *dirs, name = path.split("/")
        node = nested
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = oid

    def build(t, spec):
        tb = repo.TreeBuilder(t) if t is not None else repo.TreeBuilder()
        for name, item in spec.items():
            if isinstance(item, dict):
                sub = t[name] if t is not None and name in t else None
                tb.insert(name, build(sub, item), pygit2.GIT_FILEMODE_TREE)
            else:
                tb.insert(name, item, pygit2.GIT_FILEMODE_BLOB)
        return tb.write()

    return build(tree, nested)


def _replay(repo: pygit2.Repository, base: pygit2.Oid | None, commits: list[str]) -> pygit2.Oid:
    """Cherry-pick ``commits`` onto ``base`` in the given order (a rebase, done by an attacker)."""
    for hexid in commits:
        c = repo[hexid]
        tree = _apply(repo, repo[base].tree if base else None, _changes(repo, c))
        base = repo.create_commit(
            None, c.author, c.committer, c.message, tree, [base] if base else []
        )
    return base


def _on_top(repo: pygit2.Repository, flat: dict[str, pygit2.Oid], message: str | None = None):
    head = repo.lookup_reference(REF).target
    c = repo[head]
    tree = _apply(repo, c.tree, flat)
    return repo.create_commit(None, c.author, c.committer, message or c.message, tree, [head])


def _force(repo: pygit2.Repository, oid: pygit2.Oid) -> None:
    repo.references.create(REF, oid, force=True)


def _event_paths(repo: pygit2.Repository, commit: str) -> list[str]:
    return [p for p in _changes(repo, repo[commit]) if p.startswith(("r/", "v/"))]


# ---- basics -------------------------------------------------------------------------------


def test_empty_journal(journal: Journal, keys: JournalKeys) -> None:
    assert journal.head() is None and journal.seq() == 0 and journal.head_state() is None
    assert list(journal.log()) == []
    report = journal.verify()
    assert report.ok and report.commits_checked == 0
    again = Journal.open(journal.path, keys)
    assert again.seq() == 0 and journal.repo.is_bare


def test_create_and_open_refuse_bad_places(tmp_path: Path, keys: JournalKeys) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError):
        Journal.create(tmp_path / "full", keys)
    with pytest.raises(VaultNotFound):
        Journal.open(tmp_path / "nothing", keys)
    pygit2.init_repository(str(tmp_path / "plain"), bare=True)
    with pytest.raises(CorruptVault):
        Journal.open(tmp_path / "plain", keys)


def test_round_trip(hist: History, keys: JournalKeys) -> None:
    j = Journal.open(hist.j.path, keys)
    assert j.seq() == 3 and j.head() == hist.commits[-1]
    assert j.head_state() == {"seq": 3, "records": 3, "mac": "cc"}

    evs = j.record_events(hist.ids[0], hist.deks[hist.ids[0]])
    assert [(e.seq, e.journal_seq, e.op) for e in evs] == [(1, 1, "created"), (2, 2, "updated")]
    assert all(e.readable and e.key == "dek" for e in evs)
    assert evs[0].payload == {"text": f"{MARK} note 0"}
    assert evs[1].payload == {"text": f"{MARK} v2"}
    assert evs[0].actor == "cron:mail" and evs[1].actor == f"mcp:{MARK}-client"
    assert evs[0].time == "2025-03-01T12:00:00.000000Z" and evs[1].commit_op == "update"
    assert evs[0].path.startswith(record_dir(hist.ids[0]) + "/")
    assert j.record_events(make_ulid(), os.urandom(32)) == []

    log = list(j.log())
    assert [c.seq for c in log] == [3, 2, 1]
    assert [c.op for c in log] == ["policy", "update", "ingest"]
    assert log[2].n_events == 3 and set(log[2].record_ids) == set(hist.ids)
    assert log[2].event_ops == {"created": 3} and log[0].record_ids == ()
    assert log[1].actor == f"mcp:{MARK}-client" and log[1].db_state["mac"] == "bb"
    assert [c.seq for c in j.log(actor="mcp:")] == [2]
    assert [c.seq for c in j.log(actor="cli")] == [3]
    assert [c.seq for c in j.log(actor="cron")] == []  # exact unless it ends with ':'
    assert [c.seq for c in j.log(op="ingest")] == [1]
    assert [c.seq for c in j.log(since=datetime(2025, 3, 1, 12, 1, tzinfo=UTC))] == [3, 2]
    assert [c.seq for c in j.log(limit=1)] == [3]

    report = j.verify(deks=hist.deks.get)
    assert report.ok, report.problems
    assert (report.commits_checked, report.events_checked, report.events_decrypted) == (3, 5, 5)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=30),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=5,
    )
)
def test_payload_round_trip_property(journal: Journal, payload: dict) -> None:
    rid, dek = make_ulid(), os.urandom(32)
    journal.commit("remember", [Event("created", rid, payload, dek)], actor="cli")
    (got,) = journal.record_events(rid, dek)
    assert got.readable and got.payload == payload


def test_vault_events_and_tombstones(journal: Journal) -> None:
    rid, dek = make_ulid(), os.urandom(32)
    when = datetime(2025, 7, 9, 23, 59, tzinfo=UTC)
    journal.commit("ingest", [Event("created", rid, {"t": MARK}, dek)], actor="cli", when=when)
    commit = journal.commit(
        "erase",
        [
            Event("erased", rid, {"by": "id", "versions": 1}, None),
            Event("erase-run", None, {"n": 1}),
        ],
        actor="cli",
        when=when,
    )
    paths = _event_paths(journal.repo, commit)
    assert f"v/2025/07/09/{journal.seq():010d}.0000.erase-run" in paths
    assert f"{record_dir(rid)}/000002.0000000002.erased" in paths
    # The DEK is destroyed: content gone, the tombstone (vault key) still says what happened.
    evs = journal.record_events(rid, None)
    assert [(e.op, e.readable, e.key) for e in evs] == [
        ("created", False, "dek"),
        ("erased", True, "vault"),
    ]
    assert evs[0].payload is None and evs[1].payload == {"by": "id", "versions": 1}
    assert evs[1].actor == "cli" and evs[1].time == "2025-07-09T23:59:00.000000Z"
    report = journal.verify(deks=lambda _rid: None)
    assert report.ok and report.events_unreadable == 1 and report.events_decrypted == 2


def test_crypto_shredding(hist: History) -> None:
    rid = hist.ids[0]
    assert all(not e.readable and e.payload is None for e in hist.j.record_events(rid, None))
    wrong = hist.j.record_events(rid, os.urandom(32))
    assert len(wrong) == 2 and all(not e.readable for e in wrong)
    assert [e.op for e in wrong] == ["created", "updated"]  # ops and order stay visible
    # Another record's DEK does not open this one (AAD binds the path, the key is per record).
    assert not any(e.readable for e in hist.j.record_events(rid, hist.deks[hist.ids[1]]))
    # verify with the keys the caller still has: erased records are counted, not flagged.
    deks = {k: v for k, v in hist.deks.items() if k != rid}
    report = hist.j.verify(deks=deks.get)
    assert report.ok and report.events_unreadable == 2 and report.events_decrypted == 3


def test_wrong_dek_in_database_is_reported(hist: History) -> None:
    """verify(deks=...) notices when the database's DEK no longer opens the journal."""
    deks = dict(hist.deks)
    deks[hist.ids[1]] = os.urandom(32)
    report = hist.j.verify(deks=deks.get)
    assert not report.ok
    p = report.first_problem
    assert p.commit == hist.commits[0] and p.path.startswith(record_dir(hist.ids[1]))
    assert "decrypt" in p.reason


def test_bad_input_is_refused(journal: Journal) -> None:
    rid, dek = make_ulid(), os.urandom(32)
    ok = Event("created", rid, {}, dek)
    for op, events, kw in [
        ("Ingest Notes", [ok], {}),  # free text in an op name
        ("ingest", [Event("created", "not-a-ulid", {}, dek)], {}),
        ("ingest", [Event("created", rid.lower(), {}, dek)], {}),
        ("ingest", [Event("x y", rid, {}, dek)], {}),
        ("ingest", [Event("created", None, {}, dek)], {}),  # vault event with a DEK
        ("ingest", [Event("created", rid, {}, b"short")], {}),
        ("ingest", [Event("created", rid, ["list"], dek)], {}),  # type: ignore[arg-type]
        ("ingest", [], {}),
        ("ingest", [ok, Event("created", rid, {"x": object()}, dek)], {}),  # not JSON
        ("ingest", [ok, Event("created", rid, {"x": float("nan")}, dek)], {}),
        ("ingest", [ok], {"when": datetime(2025, 1, 1)}),  # naive time
        ("ingest", [ok], {"actor": ""}),
        ("ingest", [ok], {"db_state": {"x": b"bytes"}}),
    ]:
        with pytest.raises(UsageError):
            journal.commit(op, events, **({"actor": "cli"} | kw))
    assert journal.seq() == 0
    assert not list(journal.repo.odb)  # validated before anything was written
    with pytest.raises(UsageError):
        JournalKeys(sign_seed=b"x" * 31, mac_key=b"m" * 32, vault_key=b"v" * 32)
    keys = new_keys()
    assert keys.sign_seed.hex() not in repr(keys) and "sign_seed" not in repr(keys)


# ---- what git sees --------------------------------------------------------------------------


def _all_files_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def _assert_no_plaintext(repo_path: Path, objects: list[bytes]) -> None:
    needles = [MARK.encode(), b"note 0", b"cron:mail", b"read_only"]
    payload = json.dumps({"text": f"{MARK} note 0"}).encode()
    needles += [
        hashlib.sha256(payload).hexdigest().encode(),
        hashlib.sha1(payload).hexdigest().encode(),
    ]
    assert objects
    for data in [*objects, _all_files_bytes(repo_path)]:
        for needle in needles:
            assert needle not in data


def _objects_by_hand(path: Path) -> list[bytes]:
    """Every object in the journal, inflated without libgit2 or memctl's own pack code."""
    out = [zlib.decompress(p.read_bytes()) for p in (path / "objects").glob("[0-9a-f][0-9a-f]/*")]
    for pack_path in (path / "objects" / "pack").glob("*.pack"):
        pack = pack_path.read_bytes()
        assert pack[:8] == b"PACK\0\0\0\2" and hashlib.sha1(pack[:-20]).digest() == pack[-20:]
        pos = 12
        for _ in range(int.from_bytes(pack[8:12], "big")):
            kind, c = (pack[pos] >> 4) & 7, pack[pos]
            pos += 1
            while c & 0x80:  # the rest of the size varint
                c, pos = pack[pos], pos + 1
            assert kind in (1, 2, 3)  # memctl writes whole objects, never deltas
            d = zlib.decompressobj()
            out.append(d.decompress(pack[pos:]))
            pos = len(pack) - len(d.unused_data)
        assert pos == len(pack) - 20
    return out


def test_no_plaintext_in_any_object_loose_and_packed(hist: History) -> None:
    repo, path = hist.j.repo, hist.j.path
    # Every object through libgit2, decompressed.
    via_odb = [repo.odb.read(oid)[1] for oid in repo.odb]
    # Every object file and pack entry, inflated by hand (independent of libgit2).
    by_hand = _objects_by_hand(path)
    assert len(by_hand) == len(via_odb) > 20
    _assert_no_plaintext(path, via_odb + by_hand)
    # The messages and paths carry only ids, op names, counts and times.
    for c in hist.j.repo.walk(repo.lookup_reference(REF).target):
        assert c.message.splitlines()[0].split(":")[0] in {"ingest", "update", "policy"}

    if GIT is None:
        pytest.skip("git binary not installed")
    subprocess.run([GIT, "--git-dir", str(path), "gc", "--quiet", "--prune=now"], check=True)
    assert not list((path / "objects").glob("[0-9a-f][0-9a-f]/*"))  # all packed now
    out = subprocess.run(
        [GIT, "--git-dir", str(path), "cat-file", "--batch-all-objects", "--batch"],
        check=True,
        capture_output=True,
    ).stdout
    packed = [repo.odb.read(oid)[1] for oid in pygit2.Repository(str(path)).odb]
    assert len(packed) == len(via_odb)
    _assert_no_plaintext(path, [out, *packed])
    assert Journal.open(path, hist.j.keys).verify(deks=hist.deks.get).ok


@needs_git
def test_git_reads_the_journal(hist: History) -> None:
    path = str(hist.j.path)
    out = subprocess.run(
        [GIT, "--git-dir", path, "log", "--format=%H %s"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert [line.split()[0] for line in out] == list(reversed(hist.commits))
    assert out[-1].endswith("ingest: 3 event(s), 3 record(s)")
    subprocess.run(
        [GIT, "--git-dir", path, "fsck", "--strict", "--no-dangling"],
        check=True,
        capture_output=True,
    )
    # The record's history is a plain path query.
    rec = subprocess.run(
        [GIT, "--git-dir", path, "log", "--format=%H", "--", record_dir(hist.ids[0])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert rec == [hist.commits[1], hist.commits[0]]


def test_commit_writes_a_constant_number_of_objects(tmp_path: Path, keys: JournalKeys) -> None:
    """A one-event commit rewrites only the trees on its path, whatever the journal's size."""

    def new_objects(j: Journal) -> int:
        before = sum(1 for _ in j.repo.odb)
        j.commit("remember", [Event("created", make_ulid(), {"i": 1}, os.urandom(32))], actor="cli")
        return sum(1 for _ in j.repo.odb) - before

    small = Journal.create(tmp_path / "small", keys)
    small.commit("ingest", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    big = Journal.create(tmp_path / "big", keys)
    big.commit(
        "ingest",
        [Event("created", make_ulid(), {}, os.urandom(32)) for _ in range(200)],
        actor="cli",
    )
    # event blob + record dir + 3 shard levels + r + root + manifest + signature + commit
    assert new_objects(small) == new_objects(big) == 10


# ---- tamper evidence -------------------------------------------------------------------------


def test_altered_blob_committed_on_top_is_named(hist: History) -> None:
    repo = hist.j.repo
    path = _event_paths(repo, hist.commits[0])[1]
    data = bytearray(repo[repo[hist.commits[-1]].tree[path].id].data)
    data[20] ^= 0x01
    bad = _on_top(repo, {path: repo.create_blob(bytes(data))})
    _force(repo, bad)
    report = hist.j.verify()
    assert not report.ok
    p = report.first_problem
    assert (p.commit, p.path) == (str(bad), path), p
    with pytest.raises(AuthenticationError, match=str(bad)):
        report.raise_if_bad()


def test_altered_blob_rewritten_into_old_commit_is_named(hist: History) -> None:
    """Rewrite commit 1 with one byte changed, replay the rest: verify names the rewrite."""
    repo = hist.j.repo
    c1 = repo[hist.commits[0]]
    changes = _changes(repo, c1)
    path = _event_paths(repo, hist.commits[0])[2]
    data = bytearray(repo[changes[path]].data)
    data[-1] ^= 0x80
    changes[path] = repo.create_blob(bytes(data))
    tree = _apply(repo, None, changes)
    new1 = repo.create_commit(None, c1.author, c1.committer, c1.message, tree, [])
    _force(repo, _replay(repo, new1, hist.commits[1:]))
    p = hist.j.verify().first_problem
    assert (p.commit, p.path, p.seq) == (str(new1), path, 1)
    assert "blob differs" in p.reason


def test_deleted_commit_breaks_the_chain(hist: History) -> None:
    repo = hist.j.repo
    head = _replay(repo, repo[hist.commits[0]].id, [hist.commits[2]])  # drop commit 2
    _force(repo, head)
    report = hist.j.verify()
    assert not report.ok
    assert (
        report.first_problem.commit == str(head) and "chain broken" in report.first_problem.reason
    )
    assert report.first_problem.seq == 3 and len(report.problems) == 1


def test_reordered_commits_are_detected(hist: History) -> None:
    repo = hist.j.repo
    head = _replay(repo, repo[hist.commits[0]].id, [hist.commits[2], hist.commits[1]])
    _force(repo, head)
    report = hist.j.verify()
    moved = repo[head].parent_ids[0]  # the policy commit, now second
    assert not report.ok and report.first_problem.commit == str(moved)
    assert "chain broken" in report.first_problem.reason


def test_forgery_without_the_key_is_detected(hist: History, keys: JournalKeys) -> None:
    repo = hist.j.repo
    attacker = new_keys()
    with pytest.raises(AuthenticationError):
        Journal.open(hist.j.path, attacker)
    # The attacker writes a well-formed next commit, signed with their own key.
    head = hist.j.manifest(hist.commits[-1])
    body = dict(head.body, seq=4, prev=head.signature.hex(), op="erase")
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    sig = Signer(attacker.sign_seed).sign(raw)
    forged = _on_top(
        repo, {"manifest.json": repo.create_blob(raw), "manifest.sig": repo.create_blob(sig)}
    )
    _force(repo, forged)
    p = hist.j.verify().first_problem
    assert (p.commit, p.path) == (str(forged), "manifest.json") and "signature" in p.reason
    with pytest.raises(AuthenticationError):
        hist.j.seq()  # the head is checked on every read
    with pytest.raises(AuthenticationError):
        hist.j.commit("x", [Event("y", None, {})], actor="cli")  # never signs over a forgery
    with pytest.raises(AuthenticationError):
        Journal.open(hist.j.path, keys)


def test_edited_manifest_or_message_is_detected(hist: History) -> None:
    repo = hist.j.repo
    # Flip one byte of the signed manifest (e.g. to change the recorded db_state).
    raw = bytearray(repo[repo[hist.commits[1]].tree["manifest.json"].id].data)
    raw[len(raw) // 2] ^= 0x02
    c2 = repo[hist.commits[1]]
    tree = _apply(repo, c2.tree, {"manifest.json": repo.create_blob(bytes(raw))})
    new2 = repo.create_commit(None, c2.author, c2.committer, c2.message, tree, [c2.parent_ids[0]])
    _force(repo, _replay(repo, new2, hist.commits[2:]))
    p = hist.j.verify().first_problem
    assert (p.commit, p.path) == (str(new2), "manifest.json")

    # Only the message reworded (git hashes consistent, trees untouched).
    _force(repo, repo[hist.commits[-1]].id)
    c3 = repo[hist.commits[2]]
    reworded = repo.create_commit(
        None, c3.author, c3.committer, "policy: nothing to see\n", c3.tree.id, c3.parent_ids
    )
    _force(repo, reworded)
    p = hist.j.verify().first_problem
    assert p.commit == str(reworded) and "message" in p.reason


def test_merge_and_extra_files_are_detected(hist: History) -> None:
    repo = hist.j.repo
    c3 = repo[hist.commits[2]]
    merge = repo.create_commit(
        None, c3.author, c3.committer, c3.message, c3.tree.id, [c3.parent_ids[0], c3.id]
    )
    _force(repo, merge)
    assert "merge" in hist.j.verify().first_problem.reason

    _force(repo, c3.id)
    extra = _on_top(repo, {"notes.txt": repo.create_blob(b"hello")})
    _force(repo, extra)
    p = hist.j.verify().first_problem
    assert (p.commit, p.path) == (str(extra), "notes.txt")

    _force(repo, c3.id)
    sneaky = _on_top(
        repo, {f"{record_dir(hist.ids[2])}/000009.0000000003.created": repo.create_blob(b"x" * 40)}
    )
    _force(repo, sneaky)
    p = hist.j.verify().first_problem
    assert p.commit == str(sneaky) and p.path.endswith("000009.0000000003.created")


def test_rollback_is_visible_through_head_state(hist: History) -> None:
    """Cutting the journal back verifies (it is a valid prefix), but head_state tells the caller."""
    repo = hist.j.repo
    recorded_by_db = hist.j.head_state()
    _force(repo, repo[hist.commits[1]].id)
    assert hist.j.verify().ok and hist.j.seq() == 2
    assert hist.j.head_state() != recorded_by_db
    assert hist.j.head_state()["seq"] == 2


# ---- concurrency ----------------------------------------------------------------------------


def test_head_moved_during_commit_raises(tmp_path: Path, keys: JournalKeys, monkeypatch) -> None:
    a = Journal.create(tmp_path / "j", keys)
    a.commit("ingest", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    b = Journal.open(tmp_path / "j", keys)
    real_sign = a._signer.sign

    def sign_and_race(raw: bytes) -> bytes:
        b.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
        return real_sign(raw)

    monkeypatch.setattr(a._signer, "sign", sign_and_race)
    with pytest.raises(JournalHeadMoved):
        a.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    monkeypatch.undo()
    assert a.head() == b.head() and a.seq() == 2
    assert [c.op for c in a.log()] == ["remember", "ingest"]
    a.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    assert a.verify().ok and a.seq() == 3

    stale = b.head()
    b.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    with pytest.raises(JournalHeadMoved):
        a.commit("remember", [Event("x", None, {})], actor="cli", expect_head=stale)
    a.commit("remember", [Event("x", None, {})], actor="cli", expect_head=b.head())


def test_first_commit_race(tmp_path: Path, keys: JournalKeys, monkeypatch) -> None:
    a = Journal.create(tmp_path / "j", keys)
    b = Journal.open(tmp_path / "j", keys)
    real_sign = a._signer.sign
    monkeypatch.setattr(
        a._signer,
        "sign",
        lambda raw: (b.commit("x", [Event("y", None, {})], actor="cli"), real_sign(raw))[1],
    )
    with pytest.raises(JournalHeadMoved):
        a.commit("x", [Event("y", None, {})], actor="cli")


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from memctl.journal import Event, Journal, JournalHeadMoved, JournalKeys
    seed = sys.stdin.buffer.read(96)
    keys = JournalKeys(seed[:32], seed[32:64], seed[64:])
    j = Journal.open(sys.argv[1], keys)
    j.max_packs, j.max_loose = 3, 0  # housekeeping runs often, racing the other writer
    j.pack_min_events = int(sys.argv[4])  # 1: packs; 1000: loose objects
    done = retries = 0
    while done < int(sys.argv[2]):
        try:
            j.commit("remember", [Event("note", None, {"w": sys.argv[3], "i": done})], actor="cli")
            done += 1
        except JournalHeadMoved:
            retries += 1
            time.sleep(0.001)
    print(retries)
    """
)


def test_two_processes_never_lose_a_commit(tmp_path: Path, keys: JournalKeys) -> None:
    """No vault lock here on purpose: the ref CAS alone must keep the chain intact.

    One writer packs, the other writes loose objects, and both consolidate after almost every
    commit: packs and loose files are deleted under the other writer's feet.
    """
    Journal.create(tmp_path / "j", keys)
    secret = keys.sign_seed + keys.mac_key + keys.vault_key  # via stdin, never argv/env
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path / "j"), "15", name, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for name, mode in (("a", "1"), ("b", "1000"))
    ]
    for p in procs:
        p.stdin.write(secret)
        p.stdin.close()
    for p in procs:
        assert p.wait(timeout=120) == 0
    j = Journal.open(tmp_path / "j", keys)
    report = j.verify()
    assert report.ok, report.problems
    assert j.seq() == 30 and report.commits_checked == 30


def test_missing_objects_are_problems_not_crashes(tmp_path: Path, keys: JournalKeys) -> None:
    j = Journal.create(tmp_path / "loose", keys)
    j.pack_min_events = 1000  # loose objects, so that one can be removed alone
    hist = History(j)
    repo, path = hist.j.repo, hist.j.path
    victim = _event_paths(repo, hist.commits[1])[0]
    oid = str(repo[hist.commits[1]].tree[victim].id)
    (path / "objects" / oid[:2] / oid[2:]).unlink()
    j = Journal.open(path, keys)  # a fresh process: no object cache
    p = j.verify().first_problem
    assert (p.commit, p.path) == (hist.commits[1], victim) and "missing" in p.reason
    rid = hist.ids[0]
    with pytest.raises(CorruptVault):
        j.record_events(rid, hist.deks[rid])

    c2 = hist.commits[1]
    (path / "objects" / c2[:2] / c2[2:]).unlink()
    report = Journal.open(path, keys).verify()
    assert not report.ok and report.first_problem.commit == hist.commits[2]
    assert "parent commit object is missing" in report.first_problem.reason


def test_importing_the_package_is_cheap() -> None:
    """The CLI may import memctl.journal for its types; git and crypto load on first use."""
    code = (
        "import sys, memctl.journal as j; "
        "assert 'pygit2' not in sys.modules and 'cryptography' not in sys.modules; "
        "j.Journal; assert 'pygit2' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_git
def test_gc_packs_and_the_journal_still_verifies(hist: History, keys: JournalKeys) -> None:
    hist.j.gc()
    assert list((hist.j.path / "objects" / "pack").glob("*.pack"))
    j = Journal.open(hist.j.path, keys)
    j.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    assert j.verify(deks=hist.deks.get).ok and j.seq() == 4


@needs_git
def test_an_independent_reader_following_the_docs(hist: History, keys: JournalKeys) -> None:
    """Read and check the head commit with git and raw primitives only, as docs/journal.md says."""
    import base64
    import hmac

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def git(*args: str) -> bytes:
        return subprocess.run(
            [GIT, "--git-dir", str(hist.j.path), *args], check=True, capture_output=True
        ).stdout

    raw = git("cat-file", "blob", "HEAD:manifest.json")
    sig = git("cat-file", "blob", "HEAD:manifest.sig")
    public = Ed25519PrivateKey.from_private_bytes(keys.sign_seed).public_key()
    public.verify(sig, b"memctl-journal-manifest-v1\0" + raw)  # raises if wrong
    m = json.loads(raw)
    prev_sig = git("cat-file", "blob", "HEAD~1:manifest.sig")
    assert m["format"] == "memctl-journal/1" and m["seq"] == 3 and m["prev"] == prev_sig.hex()
    sealed = base64.b64decode(m["sealed"])
    aad = b"memctl-journal-sealed-v1\0" + b"3\0" + m["prev"].encode()
    meta = json.loads(AESGCM(keys.vault_key).decrypt(sealed[:12], sealed[12:], aad))
    assert meta == {"actor": "cli", "db_state": {"seq": 3, "records": 3, "mac": "cc"}}
    assert git("log", "-1", "--format=%B").decode() == (
        f"policy: 1 event(s), 0 record(s)\n\nJournal-Seq: 3\nJournal-Time: {m['time']}\n\n"
    )

    # A record event of commit 2, decrypted with its DEK from the path alone.
    m2 = json.loads(git("cat-file", "blob", "HEAD~1:manifest.json"))
    (e,) = m2["events"]
    rid = hist.ids[0]
    assert e["path"] == f"r/{rid[25]}/{rid[24]}/{rid[23]}/{rid}/000002.0000000002.updated"
    blob = git("cat-file", "blob", f"HEAD:{e['path']}")
    assert git("rev-parse", f"HEAD:{e['path']}").decode().strip() == e["blob"]
    mac = hmac.new(
        keys.mac_key, b"memctl-journal-blob-v1\0" + e["path"].encode() + b"\0" + blob, "sha256"
    )
    assert mac.hexdigest() == e["mac"]
    assert blob[:2] == b"\x01\x01" and e["key"] == "dek"
    aad = b"memctl-journal-event-v1\0" + b"\x01" + e["path"].encode()
    body = json.loads(AESGCM(hist.deks[rid]).decrypt(blob[2:14], blob[14:], aad))
    assert body["payload"] == {"text": f"{MARK} v2"} and body["jseq"] == 2
    assert body["actor"] == f"mcp:{MARK}-client" and body["record"] == rid


# ---- objects written in memory: packs, loose files, git's formats ----------------------------


def _packs(path: Path) -> list[Path]:
    return sorted((path / "objects" / "pack").glob("pack-*.pack"))


def _loose(path: Path) -> list[Path]:
    return list((path / "objects").glob("[0-9a-f][0-9a-f]/*"))


def _git(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GIT, "--git-dir", str(path), *args], capture_output=True, text=True, check=False
    )


_NAMES = st.text(alphabet="ab.-_/0Z", min_size=1, max_size=4).filter(
    lambda n: "/" not in n and n not in (".", "..")
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=st.dictionaries(_NAMES, st.booleans(), min_size=1, max_size=12))
def test_trees_and_commits_are_byte_identical_to_libgit2(tmp_path: Path, entries: dict) -> None:
    """Names like ``a``, ``a.b``, ``a-`` sort differently as directories: git's rule holds."""
    from memctl.journal import gitobj

    repo = pygit2.init_repository(str(tmp_path / "ref"), bare=True)
    blob = repo.create_blob(b"x")
    empty_tree = repo.TreeBuilder().write()
    tb = repo.TreeBuilder()
    ours: dict = {}
    for name, is_dir in entries.items():
        oid, mode = (empty_tree, pygit2.GIT_FILEMODE_TREE) if is_dir else (blob, 0o100644)
        tb.insert(name, oid, mode)
        ours[name.encode()] = (gitobj.MODE_TREE if is_dir else gitobj.MODE_BLOB, oid.raw)
    data = gitobj.encode_tree(ours)
    assert gitobj.object_id(gitobj.TREE, data) == tb.write().raw
    assert gitobj.parse_tree(data) == ours

    who = pygit2.Signature("memctl", "memctl@invalid", 1_740_830_400, 0)
    msg = "ingest: 2 event(s), 1 record(s)\n\nJournal-Seq: 7\nJournal-Time: t\n"
    c1 = repo.create_commit(None, who, who, msg, tb.write(), [])
    c2 = repo.create_commit(None, who, who, msg, tb.write(), [c1])
    for cid, parents in ((c1, []), (c2, [c1.raw])):
        raw = gitobj.encode_commit(
            tb.write().raw, parents, b"memctl <memctl@invalid>", 1_740_830_400, msg.encode()
        )
        assert gitobj.object_id(gitobj.COMMIT, raw) == cid.raw


@needs_git
def test_pack_index_is_byte_identical_to_gits(tmp_path: Path) -> None:
    from memctl.journal import gitobj

    objects = [(gitobj.object_id(gitobj.BLOB, d), gitobj.BLOB, d) for d in (b"a", b"b" * 70000)]
    objects.append((gitobj.object_id(gitobj.TREE, b""), gitobj.TREE, b""))
    pack, idx, _sha = gitobj.encode_pack(objects + objects[:1])  # a repeat is written once
    (tmp_path / "t.pack").write_bytes(pack)
    subprocess.run(
        [GIT, "index-pack", "-o", str(tmp_path / "git.idx"), str(tmp_path / "t.pack")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "git.idx").read_bytes() == idx
    parsed = gitobj.parse_idx(idx)
    assert sorted(o[0] for o in objects) == parsed.ids and len(parsed) == 3
    # Offsets past 2 GiB go to the 64-bit table and come back unchanged.
    ids = [bytes([i]) * 20 for i in range(3)]
    big = gitobj.encode_idx(ids, [1, 2, 3], [12, 2**31 + 5, 2**33], b"\0" * 20)
    assert gitobj.parse_idx(big).offsets == [12, 2**31 + 5, 2**33]
    with pytest.raises(ValueError):
        gitobj.parse_idx(big[:-1] + bytes([big[-1] ^ 1]))


@needs_git
def test_every_commit_is_one_pack_that_git_accepts(tmp_path: Path, keys: JournalKeys) -> None:
    j = Journal.create(tmp_path / "j", keys)
    j.pack_min_events = 1
    deks: dict[str, bytes] = {}
    batch = [Event("created", make_ulid(), {"i": i}, os.urandom(32)) for i in range(300)]
    deks.update({e.record_id: e.dek for e in batch})
    j.commit("ingest", batch, actor="cron:x")
    rid = batch[7].record_id
    j.commit("update", [Event("updated", rid, {"v": 2}, deks[rid])], actor="cli")
    j.commit("policy", [Event("policy-set", None, {"ro": True})], actor="cli")
    assert not _loose(j.path) and len(_packs(j.path)) == 3
    for pack in _packs(j.path):
        assert _git(j.path, "verify-pack", str(pack.with_suffix(".idx"))).returncode == 0
    fsck = _git(j.path, "fsck", "--strict", "--full", "--no-dangling")
    assert fsck.returncode == 0, fsck.stderr
    log = _git(j.path, "log", "--format=%s").stdout.splitlines()
    assert log == [
        "policy: 1 event(s), 0 record(s)",
        "update: 1 event(s), 1 record(s)",
        "ingest: 300 event(s), 300 record(s)",
    ]
    assert _git(j.path, "log", "--format=%s", "--", record_dir(rid)).stdout.count("\n") == 2
    again = Journal.open(j.path, keys)
    report = again.verify(deks=deks.get)
    assert report.ok and report.events_decrypted == 302, report.problems
    assert [e.payload for e in again.record_events(rid, deks[rid])] == [{"i": 7}, {"v": 2}]


def test_below_the_threshold_commits_are_loose(tmp_path: Path, keys: JournalKeys) -> None:
    j = Journal.create(tmp_path / "j", keys)
    j.pack_min_events = 32
    j.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    assert len(_loose(j.path)) == 10 and not _packs(j.path)
    events = [Event("created", make_ulid(), {}, os.urandom(32)) for _ in range(32)]
    j.commit("ingest", events, actor="cli")
    assert len(_loose(j.path)) == 10 and len(_packs(j.path)) == 1
    assert Journal.open(j.path, keys).verify().ok
    if GIT is not None:
        assert _git(j.path, "fsck", "--strict", "--no-dangling").returncode == 0


def test_durable_commits_fsync_pack_index_and_head(
    tmp_path: Path, keys: JournalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pack + idx + their directory, the head + its directory: 5 fsyncs, none when off."""
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    for durable, expected in ((True, 5), (False, 0)):
        j = Journal.create(tmp_path / f"j{durable}", keys, durable=durable)
        j.pack_min_events = 1
        calls.clear()
        j.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
        assert len(calls) == expected
    j = Journal.create(tmp_path / "loose", keys)
    j.pack_min_events = 1000
    calls.clear()
    j.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    assert len(calls) >= 10 + 2  # each loose file, its directories, the head and refs/heads


def test_a_stale_head_lock_is_busy_not_a_crash(journal: Journal) -> None:
    journal.commit("x", [Event("y", None, {})], actor="cli")
    lock = journal.path / "refs" / "heads" / "main.lock"
    lock.write_text("")
    with pytest.raises(JournalHeadMoved):
        journal.commit("x", [Event("y", None, {})], actor="cli")
    lock.unlink()
    journal.commit("x", [Event("y", None, {})], actor="cli")
    assert journal.seq() == 2 and journal.verify().ok


def _flip_in_pack(path: Path, oid: str, delta: int) -> Path:
    """Flip one byte of object ``oid``'s entry, ``delta`` bytes into it."""
    from memctl.journal import gitobj

    for pack in _packs(path):
        idx = gitobj.parse_idx(pack.with_suffix(".idx").read_bytes())
        if bytes.fromhex(oid) in idx.ids:
            offset = idx.offsets[idx.ids.index(bytes.fromhex(oid))]
            data = bytearray(pack.read_bytes())
            data[offset + delta] ^= 0x04
            pack.chmod(0o644)
            pack.write_bytes(bytes(data))
            return pack
    raise AssertionError("object not in any pack")


def test_damaged_packed_objects_are_named_not_tracebacks(
    packed: History, keys: JournalKeys
) -> None:
    hist = packed
    repo, path = hist.j.repo, hist.j.path
    victim = _event_paths(repo, hist.commits[0])[1]
    blob = str(repo[hist.commits[0]].tree[victim].id)
    _flip_in_pack(path, blob, 30)  # inside the ciphertext: zlib's checksum and git's id fail
    report = Journal.open(path, keys).verify(deks=hist.deks.get)
    assert not report.ok
    p = report.first_problem
    assert (p.commit, p.path) == (hist.commits[0], victim) and "unreadable" in p.reason
    if GIT is not None:
        fsck = _git(path, "fsck", "--strict", "--full")
        assert fsck.returncode != 0 and blob[:7] in fsck.stderr + fsck.stdout

    # The head's signed manifest damaged: opening fails with a clean CorruptVault.
    manifest = str(repo[hist.commits[2]].tree["manifest.json"].id)
    _flip_in_pack(path, manifest, 40)
    with pytest.raises(CorruptVault, match="no manifest"):
        Journal.open(path, keys)


def test_a_damaged_pack_index_is_refused_before_libgit2_reads_it(
    packed: History, keys: JournalKeys
) -> None:
    """libgit2 follows an idx's fan-out table without bounds checks: a flipped bit there made
    a lookup read megabytes past the mapped file (a segfault in the tamper sweep). Every index
    is checked before libgit2 may open it; the damage is named."""
    import struct

    from memctl.journal import gitobj

    path = packed.j.path
    idx = _packs(path)[0].with_suffix(".idx")
    raw = idx.read_bytes()
    assert gitobj.idx_layout_ok(raw[:1032], len(raw))
    assert Journal.open(path, keys).verify(deks=packed.deks.get).ok
    fanout = list(struct.unpack_from(">256I", raw, 8))
    damaged = {
        "a fan-out entry far past the object count": (41, fanout[41] | 1 << 18),
        "a decreasing fan-out": (200, max(0, fanout[199] - 1) if fanout[199] else None),
        "an object count the file has no room for": (255, fanout[255] + 1),
    }
    for why, (i, value) in damaged.items():
        if value is None:
            continue
        bad = bytearray(raw)
        struct.pack_into(">I", bad, 8 + 4 * i, value)
        assert not gitobj.idx_layout_ok(bytes(bad[:1032]), len(bad)), why
        idx.chmod(0o644)
        idx.write_bytes(bytes(bad))
        with pytest.raises(CorruptVault, match=f"pack index {idx.name} is damaged"):
            Journal.open(path, keys)
        idx.write_bytes(raw)
    # a bit of an object's offset: the layout holds, the checksum does not
    bad = bytearray(raw)
    bad[len(raw) - 40 - 2] ^= 0x10
    assert gitobj.idx_layout_ok(bytes(bad[:1032]), len(bad)) and not gitobj.idx_intact(bytes(bad))
    idx.write_bytes(bytes(bad))
    with pytest.raises(CorruptVault, match=f"pack index {idx.name} is damaged"):
        Journal.open(path, keys)
    idx.write_bytes(raw)
    assert not gitobj.idx_layout_ok(raw[:1032], len(raw) + 4)  # a truncated or padded file
    assert not gitobj.idx_layout_ok(b"\xfftOc\0\0\0\1" + raw[8:1032], len(raw))  # version 1
    assert Journal.open(path, keys).verify(deks=packed.deks.get).ok


# ---- consolidation ----------------------------------------------------------------------------


def _all_ids(j: Journal) -> set[str]:
    return {str(oid) for oid in pygit2.Repository(str(j.path)).odb}


def test_commits_consolidate_packs_and_readers_keep_reading(
    tmp_path: Path, keys: JournalKeys
) -> None:
    from memctl.journal import maintain

    writer = Journal.create(tmp_path / "j", keys)
    writer.pack_min_events, writer.max_packs = 1, 4
    deks: dict[str, bytes] = {}
    reader = None
    for n in range(1, 15):
        events = [Event("created", make_ulid(), {"n": n}, os.urandom(32)) for _ in range(n)]
        deks.update({e.record_id: e.dek for e in events})
        writer.commit("ingest", events, actor="cli")
        assert maintain.count_packs(writer.path) <= writer.max_packs + 1
        if reader is None:  # opened early: libgit2 there holds packs that will be deleted
            reader = Journal.open(writer.path, keys)
            assert all(reader.record_events(r, d)[0].readable for r, d in deks.items())
    assert reader is not None
    old_repo = reader.repo
    assert reader.seq() == 14 and reader.repo is not old_repo  # noticed the deleted packs
    assert all(reader.record_events(r, d)[0].readable for r, d in deks.items())
    assert reader.verify(deks=deks.get).ok and len(deks) == 105

    before = _all_ids(writer)
    report = writer.maintain(force=True)
    assert report.packs_after == 1 and len(_packs(writer.path)) == 1 and not _loose(writer.path)
    assert _all_ids(writer) == before
    assert Journal.open(writer.path, keys).verify(deks=deks.get).ok
    if GIT is not None:
        assert _git(writer.path, "fsck", "--strict", "--no-dangling").returncode == 0
        assert _git(writer.path, "log", "--oneline").stdout.count("\n") == 14


def test_choose_rollup_is_geometric(tmp_path: Path) -> None:
    from memctl.journal.maintain import _Pack, choose_rollup

    def sizes(*counts: int) -> list[int]:
        packs = [_Pack(tmp_path / f"p{i}", c) for i, c in enumerate(sorted(counts))]
        return [p.count for p in choose_rollup(packs)]

    assert sizes(10, 10, 10, 10) == [10, 10, 10, 10]  # all alike: one pack
    assert sizes(10, 10, 10, 1000) == [10, 10, 10]  # the big one stays
    assert sizes(10, 10, 39, 1000) == [10, 10, 39]  # 39 < 2 * (10 + 10): joins the roll-up
    assert sizes(10, 10, 40, 1000) == [10, 10]
    assert sizes(1, 10, 100, 1000) == []  # already a progression
    assert sizes(10, 10, 10, 50, 1000) == [10, 10, 10, 50]


def test_maintain_packs_loose_objects(tmp_path: Path, keys: JournalKeys) -> None:
    j = Journal.create(tmp_path / "j", keys)
    j.pack_min_events = 1000
    hist = History(j)
    before = _all_ids(j)
    assert len(_loose(j.path)) == len(before) and not _packs(j.path)
    report = j.maintain(force=True)
    assert report.loose_packed == len(before) and not _loose(j.path) and report.packs_after == 1
    assert _all_ids(j) == before
    assert Journal.open(j.path, hist.j.keys).verify(deks=hist.deks.get).ok
    j.max_loose = -1  # now every commit packs what it wrote loose
    j.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    assert not _loose(j.path)


@needs_git
def test_maintain_merges_git_packs_with_deltas_and_duplicates(
    hist: History, keys: JournalKeys
) -> None:
    from memctl.journal import gitobj, store

    path = hist.j.path
    _git(path, "gc", "--quiet", "--aggressive")  # git's own pack, offset deltas and all
    repo = pygit2.Repository(str(path))
    # A second pack repeating some objects (as after a crash between rename and delete),
    # plus one of its own that must survive the merge.
    again = [pygit2.Oid(hex=c) for c in hist.commits[:2]]
    objects = [(o.raw, int(repo.odb.read(o)[0]), repo.odb.read(o)[1]) for o in again]
    objects.append((gitobj.object_id(gitobj.BLOB, b"extra"), gitobj.BLOB, b"extra"))
    store.write_pack(path, objects, durable=False)
    j = Journal.open(path, keys)
    j.pack_min_events = 1
    j.commit("remember", [Event("created", make_ulid(), {}, os.urandom(32))], actor="cli")
    before = _all_ids(j)
    assert len(_packs(path)) == 3
    report = j.maintain(force=True)
    assert report.packs_after == 1 and _all_ids(j) == before
    assert gitobj.object_id(gitobj.BLOB, b"extra").hex() in before
    assert _git(path, "fsck", "--strict", "--full", "--no-dangling").returncode == 0
    assert Journal.open(path, keys).verify(deks=hist.deks.get).ok


def test_maintain_never_copies_or_deletes_a_damaged_pack(
    packed: History, caplog: pytest.LogCaptureFixture
) -> None:
    hist = packed
    path = hist.j.path
    packs = _packs(path)
    blob = str(hist.j.repo[hist.commits[1]].tree["manifest.sig"].id)
    _flip_in_pack(path, blob, 12)
    with pytest.raises(CorruptVault, match="checksum"):
        hist.j.maintain(force=True)
    assert _packs(path) == packs and not list((path / "objects" / "pack").glob("tmp_*"))
    # Automatic housekeeping after a commit fails quietly: the commit itself succeeded.
    hist.j.max_packs = 1
    head = hist.j.commit("x", [Event("y", None, {})], actor="cli")
    assert hist.j.head() == head and caplog.text.count("maintenance skipped") == 1
    assert set(packs) <= set(_packs(path))
    hist.j.commit("x", [Event("y", None, {})], actor="cli")  # no doomed retry at once
    assert caplog.text.count("maintenance skipped") == 1


# ---- the bytes a commit writes are fixed (the encoding fast path must not change them) ----

_GOLDEN_IDS = ["01JD0000000000000000000AAA", "01JD0000000000000000000BBB"]
# Digest of the commit ids and pack files written by the code before the per-event fast path
# (events encoded three times, ``json.dumps`` per call); computed once and pinned here.
_GOLDEN_DIGEST = "9a7320c340b4326138dd89789ad2492f71d04e4b1cbd5ee6d0ebfc2a8e3ccd7e"


def _golden_journal(tmp_path: Path, monkeypatch) -> bytes:
    """Commit a fixed set of events under fixed keys, time and nonces; digest what was written."""
    counter = iter(range(1_000_000))

    def fixed_urandom(n: int) -> bytes:
        return hashlib.sha256(b"nonce %d" % next(counter)).digest()[:n]

    monkeypatch.setattr("memctl.crypto.aead.os.urandom", fixed_urandom)
    seed = hashlib.sha512(b"golden journal keys").digest() + b"\x07" * 32
    keys = JournalKeys(seed[:32], seed[32:64], seed[64:96])
    deks = {rid: hashlib.sha256(rid.encode()).digest() for rid in _GOLDEN_IDS}
    j = Journal.create(tmp_path / "golden", keys, durable=False)
    a, b = _GOLDEN_IDS
    tricky = {
        "z": [1, 2.5, -0.0, 1e300, None, True, False, 'é\u2028"\\\n\x00😀'],
        "a": {"y": {"b": 1, "a": 2}, "x": []},
        "M": 12345678901234567890,
        "": "",
    }
    t0 = datetime(2025, 3, 1, 12, 0, 7, 123456, tzinfo=UTC)
    commits = [
        j.commit(
            "ingest",
            [
                Event("ingest", a, {"text": "première note", "n": 1}, deks[a]),
                Event("update", a, tricky, deks[a]),
                Event("ingest", b, {}, deks[b]),
                Event("model", None, {"from": None, "to": "m/ü"}),
            ],
            actor="cli:golden",
            db_state={"rows": 2, "ü": [1.5, None]},
            when=t0,
        ),
        j.commit(
            "erase",
            [
                Event("erased", b, {"why": "test"}),
                Event("update", a, {"text": "again"}, deks[a]),
                Event("void", None, {"voided_seq": 1}),
                Event("void", None, {"voided_seq": 2}),
            ],
            actor="mcp:golden",
            when=t0 + timedelta(seconds=1),
        ),
    ]
    h = hashlib.sha256()
    for c in commits:
        h.update(c.encode() + b"\n")
    for pack in sorted(_packs(j.path)):
        h.update(pack.read_bytes())
    return h.hexdigest().encode() + b" " + commits[-1].encode()


def test_commit_bytes_are_unchanged(tmp_path: Path, monkeypatch) -> None:
    digest, _head = _golden_journal(tmp_path, monkeypatch).split(b" ")
    assert digest.decode() == _GOLDEN_DIGEST


@given(
    payload=st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=5,
    ),
    record=st.none() | st.just(_GOLDEN_IDS[0]),
    op=st.sampled_from(["ingest", "update", "erased", "model"]),
    actor=st.text(max_size=12),
    jseq=st.integers(min_value=1, max_value=2**40),
)
def test_spliced_event_body_equals_its_json(
    payload: dict, record: str | None, op: str, actor: str, jseq: int
) -> None:
    from memctl.journal import events as ev

    time = "2025-03-01T12:00:07.123456Z"
    body = {
        "op": op,
        "record": record,
        "jseq": jseq,
        "time": time,
        "actor": actor,
        "commit_op": "ingest",
        "payload": payload,
    }
    old = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()
    assert ev.dumps(body) == old
    spliced = ev.EventBodies(actor, "ingest", jseq, time).encode(op, record, ev.dumps(payload))
    assert spliced == old
