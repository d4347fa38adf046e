"""The vault's audit history: journal commits inside database transactions, provenance, verify.

Every state change commits to the journal *inside* the database transaction that makes it,
just before COMMIT, and records the new journal head and sequence number in that same
transaction. So the database always knows the journal head it has seen, and each journal
commit's signed manifest carries the database state (record count, journal seq) it produced.

A crash between the journal commit and the database COMMIT leaves the journal one commit ahead.
That window is marked by an *intent* file (``VAULT/.journal-intent``: the seq about to be written,
MACed with the journal MAC key); finding a valid intent for exactly the commit the database lacks
means "crashed mid-write", and the next write voids that commit with a signed ``void`` event.
Any other disagreement — the journal behind the database, or ahead without an intent — means one
of them was rolled back or replaced, and is reported as tampering.
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
            import pygit2

            from memctl.journal import Journal

            # libgit2 does not fsync by default; an acknowledged commit must survive power loss.
            pygit2.option(
                pygit2.enums.Option.ENABLE_FSYNC_GITDIR,
                os.environ.get("MEMCTL_TEST_NOFSYNC") is None,
            )
            self._journal = Journal.open(self.path, self._keys())
        return self._journal

    def create(self) -> None:
        from memctl.journal import Journal

        with private_umask():
            self._journal = Journal.create(self.path, self._keys())
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

    def _write_intent(self, seq: int) -> None:
        from memctl.vault.header import write_atomic

        try:
            write_atomic(self.vault.path / INTENT_NAME, f"{seq} {self._intent_mac(seq)}\n".encode())
        except OSError as exc:  # a full disk: nothing is written yet, say so with exit 11
            raise NoSpace(f"{INTENT_NAME}: disk full or I/O error while writing") from exc

    def _read_intent(self) -> int | None:
        try:
            seq_text, tag = (self.vault.path / INTENT_NAME).read_text().split()
            seq = int(seq_text)
        except (OSError, ValueError):
            return None
        return seq if _hmac.compare_digest(tag, self._intent_mac(seq)) else None

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
        if j_seq == db_seq + 1 and self._read_intent() == j_seq:
            self._void(conn, j_seq)
            return
        raise CorruptVault(
            f"journal and database disagree: the database last saw journal seq {db_seq}, "
            f"the journal is at seq {j_seq} — one of them was rolled back or replaced",
            hint="run `memctl audit verify`; restore both from the same backup",
        )

    def _void(self, conn: Any, seq: int) -> None:
        """Record that journal commit ``seq`` never reached the database (a crash)."""
        from memctl.journal import Event

        self.commit(
            conn,
            "void",
            [Event("void", None, {"voided_seq": seq})],
            actor="memctl",
            _reconciled=True,
        )

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
        self._write_intent(seq)
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
        intent = self._read_intent()
        if intent is None or intent <= self.db_position(self.vault.conn)[1]:
            self._clear_intent()

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
            if j.seq() == db_seq + 1 and self._read_intent() == j.seq():
                problems.append(
                    f"journal commit seq {j.seq()} was written but its database transaction "
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
                if j.seq() == db_seq + 1 and self._read_intent() == j.seq():
                    self._void(conn, j.seq())
                    actions.append(f"voided journal commit seq {db_seq + 1} (crash mid-write)")
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
