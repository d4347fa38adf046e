"""The vault's audit history: journal commits inside database transactions, provenance, verify.

Every state change commits to the journal *inside* the database transaction that makes it,
just before COMMIT, and records the new journal head and sequence number in that same
transaction. So the database always knows the journal head it has seen, and each journal
commit's signed manifest carries the database state (record count, journal seq) it produced.

A crash between the journal commit and the database COMMIT leaves the journal ahead of the
database. That window is marked by an *intent* file (``VAULT/.journal-intent``, format 2:
``2 BASE TOP MAC``): BASE is the journal seq the database had committed when the transaction
began, TOP the seq about to be written, MACed with the journal MAC key. Finding a valid intent
whose BASE is exactly the database's seq and whose TOP is exactly the journal's, with the
database's head an ancestor of the journal's head, means "crashed mid-write": the next write
voids the whole tail (BASE+1 .. TOP) with one signed ``void`` event. A tail of more than one
commit happens when a process crashes again while voiding the first crash's commit (the void
commit is itself written before the database COMMIT) or when one transaction makes several
commits (``audit repair``). Any other disagreement — the journal behind the database, or ahead
without a matching intent — means one of them was rolled back or replaced, and is reported as
tampering. Format-1 intents (``SEQ MAC``) from older versions read as BASE = SEQ - 1.
"""

from __future__ import annotations

import contextlib
import hmac as _hmac
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from memctl.crypto.keys import mac
from memctl.errors import CorruptVault, NoSpace

if TYPE_CHECKING:
    from memctl.journal import Event, Journal
    from memctl.vault.core import Vault

INTENT_NAME = ".journal-intent"
META_HEAD = "journal_head"
META_SEQ = "journal_seq"


def _durable() -> bool:
    """fsync journal writes; ``MEMCTL_TEST_NOFSYNC`` (tests only) turns it off."""
    return os.environ.get("MEMCTL_TEST_NOFSYNC") is None


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files git creates (objects, refs) are the owner's only, like the rest of the vault."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


class History:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._journal: Journal | None = None
        #: the database's committed journal seq when this transaction's first commit began
        self._base: int | None = None

    # -- the repository -------------------------------------------------------------------
    def _keys(self) -> Any:
        from memctl.journal import JournalKeys

        k = self.vault.keys
        return JournalKeys(
            sign_seed=k.journal_sign, mac_key=k.journal_mac, vault_key=k.journal_vault
        )

    @property
    def path(self) -> Any:
        return self.vault.path / "journal"

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            from memctl.journal import Journal

            # memctl writes every object and ref itself and fsyncs them (docs/journal.md §10):
            # an acknowledged commit survives power loss. No libgit2 global option is needed.
            self._journal = Journal.open(self.path, self._keys(), durable=_durable())
            # packing runs after the database COMMIT (committed()), not inside the crash window
            self._journal.auto_maintain = False
        return self._journal

    def create(self) -> None:
        from memctl.journal import Journal

        with private_umask():
            self._journal = Journal.create(self.path, self._keys(), durable=_durable())
        self._journal.auto_maintain = False
        for root, dirs, files in os.walk(self.path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o700)
            for f in files:
                os.chmod(os.path.join(root, f), 0o600)

    # -- the database's view ----------------------------------------------------------------
    def db_position(self, conn: Any) -> tuple[str | None, int]:
        rows = dict(
            conn.execute(
                "SELECT key, value FROM meta WHERE key IN (?, ?)", (META_HEAD, META_SEQ)
            ).fetchall()
        )
        return rows.get(META_HEAD), int(rows.get(META_SEQ, 0))

    def _intent_mac(self, seq: int) -> str:
        return mac(
            self.vault.keys.journal_mac, b"memctl/v1/journal-intent", str(seq).encode()
        ).hex()

    def _intent_mac2(self, base: int, top: int) -> str:
        return mac(
            self.vault.keys.journal_mac,
            b"memctl/v2/journal-intent",
            str(base).encode(),
            str(top).encode(),
        ).hex()

    def _write_intent(self, base: int, top: int) -> None:
        from memctl.vault.header import write_atomic

        line = f"2 {base} {top} {self._intent_mac2(base, top)}\n"
        try:
            write_atomic(self.vault.path / INTENT_NAME, line.encode())
        except OSError as exc:  # a full disk: nothing is written yet, say so with exit 11
            raise NoSpace(f"{INTENT_NAME}: disk full or I/O error while writing") from exc

    def _read_intent(self) -> tuple[int, int] | None:
        """(BASE, TOP) of a valid intent, or None (absent, unreadable or a bad MAC)."""
        try:
            fields = (self.vault.path / INTENT_NAME).read_text().split()
            if len(fields) == 2:  # format 1: one commit, SEQ MAC
                top = int(fields[0])
                ok = _hmac.compare_digest(fields[1], self._intent_mac(top))
                return (top - 1, top) if ok else None
            if len(fields) != 4 or fields[0] != "2":
                return None
            base, top = int(fields[1]), int(fields[2])
        except (OSError, ValueError):
            return None
        if not 0 <= base < top:
            return None
        ok = _hmac.compare_digest(fields[3], self._intent_mac2(base, top))
        return (base, top) if ok else None

    def _crash_tail(self, db_head: str | None, db_seq: int) -> list[int]:
        """The journal seqs a crash left beyond the database, or [] when there is no such tail.

        Needs a valid intent naming exactly (database seq, journal seq) and the database's head
        on the journal's first-parent chain exactly that many commits back.
        """
        j = self.journal
        j_seq = j.seq()
        if j_seq <= db_seq or self._read_intent() != (db_seq, j_seq):
            return []
        if j.ancestor(j_seq - db_seq) != db_head:
            return []
        return list(range(db_seq + 1, j_seq + 1))

    def begin(self) -> None:
        """At the start of a write transaction: the next journal commit opens a new intent."""
        self._base = None

    def _clear_intent(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.vault.path / INTENT_NAME)

    def reconcile(self, conn: Any) -> None:
        """Inside a write transaction: make sure journal and database agree before writing.

        Voids a commit left by a crash mid-write; raises :class:`CorruptVault` on a rollback.
        """
        j = self.journal
        db_head, db_seq = self.db_position(conn)
        j_seq = j.seq()
        if j.head() == db_head:
            return
        tail = self._crash_tail(db_head, db_seq)
        if tail:
            self._void(conn, tail)
            return
        raise CorruptVault(
            f"journal and database disagree: the database last saw journal seq {db_seq}, "
            f"the journal is at seq {j_seq} — one of them was rolled back or replaced",
            hint="run `memctl audit verify`; restore both from the same backup",
        )

    def _void(self, conn: Any, seqs: list[int]) -> None:
        """Record that journal commits ``seqs`` never reached the database (a crash)."""
        from memctl.journal import Event

        events = [Event("void", None, {"voided_seq": seq}) for seq in seqs]
        self.commit(conn, "void", events, actor="memctl", _reconciled=True)

    # -- writing ------------------------------------------------------------------------------
    def commit(
        self,
        conn: Any,
        op: str,
        events: list[Event],
        *,
        actor: str,
        _reconciled: bool = False,
    ) -> str:
        """Append one journal commit inside the caller's DB transaction (before its COMMIT)."""
        if not events:
            return self.journal.head() or ""
        if not _reconciled:
            self.reconcile(conn)
        j = self.journal
        seq = j.seq() + 1
        records = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        state = {"seq": seq, "records": records}
        state["mac"] = mac(
            self.vault.keys.journal_mac,
            b"memctl/v1/db-state",
            str(seq).encode(),
            str(records).encode(),
        ).hex()
        if self._base is None:  # the first journal commit of this transaction
            self._base = self.db_position(conn)[1]
        self._write_intent(self._base, seq)
        # We hold the database's write transaction, so no other memctl writer is committing:
        # a ref lock here was left by a process killed inside libgit2's ref update.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / "refs" / "heads" / "main.lock")
        with private_umask():
            head = j.commit(op, events, actor=actor, db_state=state, expect_head=j.head())
        conn.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [(META_HEAD, head), (META_SEQ, str(seq))],
        )
        return head

    def committed(self) -> None:
        """After the DB COMMIT: the write is acknowledged, the crash window is closed — once
        the database holds the commit the intent names (a transaction that made no journal
        commit must not erase the marker of an earlier crash)."""
        self._base = None
        intent = self._read_intent()
        if intent is None or intent[1] <= self.db_position(self.vault.conn)[1]:
            self._clear_intent()
        if self._journal is not None:
            self._journal.maintain_if_due()  # housekeeping outside the crash window

    # -- reading ------------------------------------------------------------------------------
    def record_events(self, record_id: str, dek: bytes | None) -> list[dict[str, Any]]:
        return [
            {
                "seq": e.seq,
                "journal_seq": e.journal_seq,
                "op": e.op,
                "time": e.time,
                "actor": e.actor,
                "readable": e.readable,
                "payload": e.payload,
            }
            for e in self.journal.record_events(record_id, dek)
        ]

    def dek_event_count(self, ids: Iterable[str]) -> int:
        return sum(
            1 for rid in ids for e in self.journal.record_events(rid, None) if e.key == "dek"
        )

    def log(self, **filters: Any) -> list[dict[str, Any]]:
        return [
            {
                "commit": c.commit,
                "seq": c.seq,
                "op": c.op,
                "time": c.time,
                "actor": c.actor,
                "events": c.n_events,
                "records": list(c.record_ids),
                "event_ops": c.event_ops,
            }
            for c in self.journal.log(**filters)
        ]

    def verify(self) -> dict[str, Any]:
        """Signatures, chain, and database ↔ journal agreement. Never raises for problems."""
        try:
            return self._verify()
        except CorruptVault as exc:
            self._journal = None
            return {
                "ok": False,
                "head": None,
                "seq": 0,
                "commits_checked": 0,
                "events_checked": 0,
                "events_decrypted": 0,
                "events_unreadable": 0,
                "records": None,
                "problems": [exc.message],
            }

    def _verify(self) -> dict[str, Any]:
        vault = self.vault
        conn = vault.conn
        problems: list[str] = []
        report = self.journal.verify(deks=vault.record_key_or_none)
        if report.problems:
            problems += [str(p) for p in report.problems]
        db_head, db_seq = self.db_position(conn)
        j = self.journal
        if j.head() != db_head:
            tail = self._crash_tail(db_head, db_seq)
            if tail:
                span = f"seq {tail[0]}" if len(tail) == 1 else f"seqs {tail[0]}-{tail[-1]}"
                problems.append(
                    f"journal commit {span} was written but its database transaction "
                    "never committed (a crash); `memctl audit repair` voids it"
                )
            else:
                problems.append(
                    f"database last saw journal seq {db_seq} but the journal is at seq "
                    f"{j.seq()}: one of them was rolled back or replaced"
                )
        # Agreement: every live record has events; every journalled record is live or erased.
        journalled: set[str] = set()
        erased: set[str] = set()
        seq_records: dict[int, set[str]] = {}
        for c in j.log():
            seq_records[c.seq] = set(c.record_ids)
            journalled.update(c.record_ids)
            if c.event_ops.get("erased"):
                erased.update(c.record_ids)
        voided = self._voided_seqs()
        in_voided = set().union(*(seq_records.get(s, set()) for s in voided)) if voided else set()
        live = {rid for (rid,) in conn.execute("SELECT id FROM records")}
        missing = sorted(live - journalled)
        if missing:
            problems.append(f"record {missing[0]} has no journal events ({len(missing)} such)")
        unknown = sorted(journalled - live - erased - in_voided)
        if unknown:
            problems.append(
                f"journal has events for record {unknown[0]} that the database does not know "
                f"and that was not erased ({len(unknown)} such)"
            )
        state = j.head_state() or {}
        if db_head == j.head() and state.get("records") not in (None, len(live)):
            problems.append(
                f"the journal's last database state says {state.get('records')} records, "
                f"the database has {len(live)}"
            )
        return {
            "ok": not problems,
            "head": j.head(),
            "seq": j.seq(),
            "commits_checked": report.commits_checked,
            "events_checked": report.events_checked,
            "events_decrypted": report.events_decrypted,
            "events_unreadable": report.events_unreadable,
            "records": len(live),
            "problems": problems,
        }

    def _voided_seqs(self) -> set[int]:
        out: set[int] = set()
        for c in self.journal.log(op="void"):
            for e in self._vault_events(c.commit):
                seq = (e.get("payload") or {}).get("voided_seq")
                if isinstance(seq, int):
                    out.add(seq)
        return out

    def _vault_events(self, commit: str) -> list[dict[str, Any]]:
        return self.journal.vault_events(commit)

    def repair(self) -> dict[str, Any]:
        """Bring journal and database back into agreement without losing acknowledged records.

        - a commit left by a crash mid-write is voided;
        - live records without journal events get a ``recovered`` event.
        """
        from memctl.journal import Event

        vault = self.vault
        actions: list[str] = []
        with vault.lock(), vault.transaction() as conn:
            db_head, db_seq = self.db_position(conn)
            j = self.journal
            if j.head() != db_head:
                tail = self._crash_tail(db_head, db_seq)
                if tail:
                    self._void(conn, tail)
                    actions.append(
                        f"voided journal commit(s) seq {', '.join(map(str, tail))} "
                        "(crash mid-write)"
                    )
                else:
                    raise CorruptVault(
                        "journal and database disagree beyond a crash: one was rolled back; "
                        "restore both from the same backup"
                    )
            journalled: set[str] = set()
            for c in j.log():
                journalled.update(c.record_ids)
            rows = conn.execute("SELECT id, version FROM records").fetchall()
            missing = [(rid, ver) for rid, ver in rows if rid not in journalled]
            if missing:
                events = []
                for rid, ver in missing:
                    dek = vault.record_key(rid)
                    events.append(Event("recovered", rid, {"version": ver}, dek=dek))
                self.commit(conn, "repair", events, actor="memctl", _reconciled=True)
                actions.append(f"recorded {len(missing)} record(s) missing from the journal")
        self.committed()
        return {"actions": actions, "ok": True}
