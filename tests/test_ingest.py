"""The ingest engine: sources → vault, idempotency, versions, cursors, prune, bad input, summary."""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memctl.cli import app
from memctl.errors import ExitCode, RecordNotFound, UsageError
from memctl.ingest import cursors as cur
from memctl.ingest.pipeline import IngestConfig, Ingestor, run_ingest
from memctl.ingest.plugins import PluginHost
from memctl.ingest.sources import SourceError

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def notes_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        write(root / f"note{i}.md", f"# Note {i}\n\nThe garden plan number {i} needs compost.\n")
    write(root / "sub" / "deep.md", "# Deep\n\n## Roses\n\nPrune the roses in March.\n")
    write(root / ".hidden" / "secret.md", "# Hidden\n\nnever ingested\n")
    write(root / "draft.md~", "# Backup\n\neditor backup, never ingested\n")
    write(root / ".note0.md.swp", "swap file")
    return root


def records(vault: Any, **kw: Any) -> list[dict[str, Any]]:
    return vault.list(limit=1000, **kw)


def by_locator(vault: Any) -> dict[str, dict[str, Any]]:
    return {r["locator"]: r for r in records(vault)}


# -- basics --------------------------------------------------------------------------------------
def test_folder_is_detected_chunked_and_tagged(vault: Any, tmp_path: Path) -> None:
    root = notes_folder(tmp_path / "notes")
    report = run_ingest(vault, [str(root)], config=IngestConfig(tags=["home"]))
    assert (report.added, report.failed, report.files_read) == (4, 0, 4)
    got = by_locator(vault)
    assert set(got) == {
        "note0.md#note-0",
        "note1.md#note-1",
        "note2.md#note-2",
        "sub/deep.md#deep/roses",
    }
    roses = got["sub/deep.md#deep/roses"]
    assert roses["plugin"] == "markdown" and roses["tags"] == ["home"]
    assert roses["source"] == (root / "sub" / "deep.md").resolve().as_uri()
    assert "Deep" in roses["context"] and roses["actor"] == "api"
    assert not any("never ingested" in r["text"] for r in records(vault))


def test_rerun_adds_nothing_and_opens_no_unchanged_file(
    vault: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = notes_folder(tmp_path / "notes")
    first = run_ingest(vault, [str(root)])
    opened: list[str] = []
    real_open = builtins.open

    def spy(file: Any, *args: Any, **kw: Any) -> Any:
        if isinstance(file, str | os.PathLike) and str(root) in os.fspath(file):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", spy)
    again = run_ingest(vault, [str(root)])
    assert opened == []
    assert (again.added, again.updated, again.failed) == (0, 0, 0)
    assert again.skipped == first.added and again.files_unchanged == 4 and again.files_read == 0
    assert len(records(vault)) == 4


def test_noop_reads_cursors_with_one_query(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(20):
        write(root / f"n{i:02}.md", f"# N{i}\n\nbody {i}\n")
    run_ingest(vault, [str(root)])
    statements: list[str] = []
    vault.conn.set_trace_callback(statements.append)
    try:
        report = run_ingest(vault, [str(root)])
    finally:
        vault.conn.set_trace_callback(None)
    assert report.files_unchanged == 20
    cursor_reads = [s for s in statements if "FROM cursors" in s]
    assert len(cursor_reads) == 1, cursor_reads
    assert not any("INSERT" in s or "records" in s for s in statements)


def test_changed_section_is_a_new_version_of_the_same_record(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note = write(
        root / "plan.md", "# Plan\n\n## Spring\n\nSow peas.\n\n## Autumn\n\nPlant bulbs.\n"
    )
    run_ingest(vault, [str(root)])
    before = by_locator(vault)
    note.write_text("# Plan\n\n## Spring\n\nSow peas and beans.\n\n## Autumn\n\nPlant bulbs.\n")
    os.utime(note, ns=(1, 10**18))  # a different mtime, whatever the clock's resolution
    report = run_ingest(vault, [str(root)])
    assert (report.added, report.updated, report.skipped) == (0, 1, 1)
    after = by_locator(vault)
    spring = after["plan.md#plan/spring"]
    assert spring["id"] == before["plan.md#plan/spring"]["id"] and spring["version"] == 2
    assert "beans" in spring["text"]
    old = vault.get(spring["id"], versions=True)["versions"]
    assert [v["text"] for v in old] == ["Sow peas."]
    assert len(records(vault)) == 2


def test_group_of_files_is_one_transaction(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    for i in range(12):
        write(root / f"n{i}.md", f"# N{i}\n\nbody {i}\n")
    calls: list[tuple[int, int]] = []
    real = vault.ingest_many

    def spy(items: Any, **kw: Any) -> Any:
        items = list(items)
        calls.append((len(items), kw["batch_size"]))
        return real(items, **kw)

    vault.ingest_many = spy
    run_ingest(vault, [str(root)])
    assert calls == [(12, 13)]  # 12 whole files, one ingest_many, one batch


# -- cursors -----------------------------------------------------------------------------------
def test_cursor_rows_hold_fingerprint_source_and_identities(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    note = write(root / "a.md", "# A\n\none\n\n# B\n\ntwo\n")
    run_ingest(vault, [str(root)])
    known = cur.load_under(vault.conn, "default", root, is_dir=True)
    cursor = known[str(note.resolve())]
    assert cursor.source == "markdown" and cursor.count == 2
    st = note.stat()
    assert cursor.fingerprint == f"{st.st_size}:{st.st_mtime_ns}"
    cur.load_items(vault.conn, [cursor])
    assert cursor.items == {note.resolve().as_uri(): ["a.md#a", "a.md#b"]}
    # a cursor is per namespace: another namespace reads the folder again
    other = run_ingest(vault, [str(root)], config=IngestConfig(namespace="work"))
    assert (other.added, other.files_read) == (2, 1)


def test_rescan_reads_unchanged_files(vault: Any, tmp_path: Path) -> None:
    root = notes_folder(tmp_path / "notes")
    run_ingest(vault, [str(root)])
    report = run_ingest(vault, [str(root)], config=IngestConfig(rescan=True, tags=["later"]))
    assert report.files_read == 4 and report.added == 0


def test_explicit_file_uses_its_cursor_too(vault: Any, tmp_path: Path) -> None:
    note = write(tmp_path / "one.md", "# One\n\nonly one\n")
    assert run_ingest(vault, [str(note)]).added == 1
    again = run_ingest(vault, [str(note)])
    assert (again.added, again.skipped, again.files_unchanged) == (0, 1, 1)


# -- prune -------------------------------------------------------------------------------------
def test_prune_erases_deleted_files_and_vanished_chunks(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    keep = write(root / "keep.md", "# Keep\n\n## A\n\nalpha stays\n\n## B\n\nbeta goes\n")
    gone = write(root / "gone.md", "# Gone\n\nthe whole file goes\n")
    run_ingest(vault, [str(root)])
    ids = {loc: r["id"] for loc, r in by_locator(vault).items()}
    gone.unlink()
    keep.write_text("# Keep\n\n## A\n\nalpha stays\n")
    os.utime(keep, ns=(1, 10**18))
    report = run_ingest(vault, [str(root)], config=IngestConfig(prune=True))
    assert report.pruned == 2 and report.failed == 0
    for loc in ("gone.md#gone", "keep.md#keep/b"):
        with pytest.raises(RecordNotFound):
            vault.get(ids[loc])
    assert vault.get(ids["keep.md#keep/a"])["text"] == "alpha stays"
    receipts = {r["id"] for r in vault.erased_receipts()}
    assert receipts == {ids["gone.md#gone"], ids["keep.md#keep/b"]}
    assert cur.load_under(vault.conn, "default", root, is_dir=True).keys() == {str(keep.resolve())}


def test_without_prune_nothing_is_erased_until_a_later_prune(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    keep = write(root / "keep.md", "# Keep\n\n## A\n\nalpha\n\n## B\n\nbeta\n")
    run_ingest(vault, [str(root)])
    keep.write_text("# Keep\n\n## A\n\nalpha\n")
    os.utime(keep, ns=(1, 10**18))
    assert run_ingest(vault, [str(root)]).pruned == 0
    assert len(records(vault)) == 2  # the vanished chunk is remembered as an orphan...
    report = run_ingest(vault, [str(root)], config=IngestConfig(prune=True))
    assert report.pruned == 1 and report.files_unchanged == 1  # ...and erased later, unread
    assert [r["locator"] for r in records(vault)] == ["keep.md#keep/a"]
    assert run_ingest(vault, [str(root)], config=IngestConfig(prune=True)).pruned == 0


def test_prune_keeps_what_another_file_also_has(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    write(root / "a.md", "# Same\n\nshared sentence\n")
    b = write(root / "b.md", "# Same\n\nshared sentence\n")
    run_ingest(vault, [str(root)])
    assert len(records(vault)) == 1  # de-duplicated by content
    b.unlink()
    run_ingest(vault, [str(root)], config=IngestConfig(prune=True))
    assert len(records(vault)) == 1  # b never owned the record: a's stays


# -- bad input ---------------------------------------------------------------------------------
def test_source_error_drops_the_whole_file_and_the_run_goes_on(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "broken.json", '[{"text": "first record, SECRET-1"}, {"text": "second')
    write(root / "fine.md", "# Fine\n\nthis one is fine\n")
    report = run_ingest(vault, [str(root)])
    assert (report.added, report.failed, report.files_failed) == (1, 1, 1)
    assert report.exit_code == ExitCode.PARTIAL
    (error,) = report.errors
    assert "broken.json" in error and "byte" in error and "SECRET" not in error
    assert [r["text"] for r in records(vault)] == ["this one is fine"]
    # the failed file has no cursor: the next run reports it again
    assert run_ingest(vault, [str(root)]).failed == 1


def test_source_raising_midway_keeps_nothing_of_that_file(vault: Any, tmp_path: Path) -> None:
    host = PluginHost()
    spec = host.sources()["text"]

    def half(path: Path, options: Any) -> Any:
        yield {"text": "written before the failure", "locator": "x#1"}
        raise SourceError("truncated input", position="line 2")

    host.sources()["text"] = dataclasses.replace(spec, iter_items=half)
    note = write(tmp_path / "half.txt", "anything\n")
    engine = Ingestor(vault, IngestConfig(), host=host)
    engine.ingest_paths([note])
    report = engine.finish()
    assert report.failed == 1 and "half.txt (line 2): truncated input" in report.errors[0]
    assert records(vault) == []


def test_malformed_jsonl_line_is_skipped_with_position(vault: Any, tmp_path: Path) -> None:
    f = write(
        tmp_path / "log.jsonl", '{"text": "good line"}\n{"text": oops}\n{"text": "also good"}\n'
    )
    report = run_ingest(vault, [str(f)])
    assert (report.added, report.failed) == (2, 0)
    assert any("log.jsonl (line 2)" in s for s in report.skips)


def test_binary_and_unrecognised_files_are_skipped_with_a_reason(
    vault: Any, tmp_path: Path
) -> None:
    root = tmp_path / "mixed"
    (root).mkdir()
    (root / "photo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    (root / "script.py").write_text("print('hi')\n")
    write(root / "ok.md", "# Ok\n\nfine\n")
    report = run_ingest(vault, [str(root)])
    assert (report.added, report.failed) == (1, 0)
    skips = "\n".join(report.skips)
    assert "photo.md: binary file, skipped" in skips
    assert "script.py: no source recognises this file" in skips
    # named explicitly, any source scoring > 0 takes it
    assert run_ingest(vault, [str(root / "script.py")]).added == 1


def test_items_the_vault_refuses_fail_and_are_read_again(vault: Any, tmp_path: Path) -> None:
    note = write(tmp_path / "a.md", "# A\n\none\n")
    two = write(tmp_path / "two.jsonl", '{"text": "first"}\n{"text": "second"}\n')
    report = run_ingest(vault, [str(note), str(two)], config=IngestConfig(kind="Not A Kind"))
    assert report.failed == 3 and records(vault) == []
    assert report.errors[0].startswith(f"{note}: kind must be")
    assert report.errors[2].startswith(f"{two}: item 2: kind must be")
    assert run_ingest(vault, [str(note), str(two)]).added == 3  # no cursor was saved for them


def test_missing_path_and_unknown_options_are_usage_errors(vault: Any, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        run_ingest(vault, [str(tmp_path / "nope")], text="never stored")
    assert records(vault) == []
    with pytest.raises(UsageError, match="no source has an option"):
        run_ingest(vault, [str(tmp_path)], config=IngestConfig(options={"colour": "red"}))
    with pytest.raises(UsageError, match="has no option"):
        run_ingest(
            vault, [str(tmp_path)], config=IngestConfig(source_type="markdown", options={"x": "1"})
        )
    with pytest.raises(UsageError, match="unknown source type"):
        run_ingest(vault, [str(tmp_path)], config=IngestConfig(source_type="nope"))


def test_source_type_forces_a_source_and_options_reach_it(vault: Any, tmp_path: Path) -> None:
    f = write(tmp_path / "export.dat", json.dumps([{"body": "forced json record", "id": 7}]))
    cfg = IngestConfig(source_type="json", options={"text_field": "body"})
    report = run_ingest(vault, [str(f)], config=cfg)
    assert report.added == 1
    (rec,) = records(vault)
    assert rec["text"] == "forced json record" and rec["plugin"] == "records"


def test_stdin_with_a_source_type(vault: Any) -> None:
    data = b'{"text": "from a pipe", "id": "a"}\n{"text": "second", "id": "b"}\n'
    report = run_ingest(vault, ["-"], stdin=data, config=IngestConfig(source_type="json"))
    assert report.added == 2
    assert {r["source"] for r in records(vault)} == {"stdin:"}
    assert run_ingest(vault, ["-"], stdin=data, config=IngestConfig(source_type="json")).added == 0


# -- the command line --------------------------------------------------------------------------
@pytest.fixture
def cli_env(vault_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    return vault_path


def cli(*args: str, input: str | bytes | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def test_cli_summary_is_integers_and_exit_code_says_partial(cli_env: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "ok.md", "# Ok\n\nan ok note\n")
    write(root / "bad.json", '[{"text": "x"}, ')
    r = cli("ingest", str(root), "--json")
    assert r.exit_code == ExitCode.PARTIAL
    summary = json.loads(r.stdout)
    for key in ("added", "updated", "skipped", "failed", "pruned"):
        assert type(summary[key]) is int
    assert (summary["added"], summary["failed"]) == (1, 1)
    assert "bad.json" in r.stderr and "memctl: failed:" in r.stderr
    assert summary["errors"] and summary["files"] == {"read": 1, "unchanged": 0, "failed": 1}

    (root / "bad.json").unlink()
    r = cli("ingest", str(root))
    assert r.exit_code == 0 and r.stdout == ""
    assert "added 0, updated 0, skipped 1, failed 0" in r.stderr
    assert cli("ingest", str(root / "missing")).exit_code == ExitCode.USAGE


def test_cli_quiet_prints_nothing_on_success_but_failures_still(
    cli_env: Path, tmp_path: Path
) -> None:
    root = tmp_path / "in"
    write(root / "ok.md", "# Ok\n\nquiet note\n")
    (root / "img.md").write_bytes(b"\x00\x01\x02 binary")
    for args in (("ingest", str(root), "--quiet"), ("--quiet", "ingest", str(root))):
        r = cli(*args)
        assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    write(root / "bad.json", "[1, ")
    r = cli("ingest", str(root), "-q")
    assert r.exit_code == ExitCode.PARTIAL and "bad.json" in r.stderr and "img.md" not in r.stderr


def test_cli_option_and_prune(cli_env: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    f = write(root / "r.jsonl", '{"body": "alpha one", "id": 1}\n{"body": "beta two", "id": 2}\n')
    r = cli("ingest", str(root), "-o", "text_field=body", "--json")
    assert json.loads(r.stdout)["added"] == 2
    f.write_text('{"body": "alpha one", "id": 1}\n')
    os.utime(f, ns=(1, 10**18))
    r = cli("ingest", str(root), "-o", "text_field=body", "--prune", "--json")
    assert json.loads(r.stdout)["pruned"] == 1
    assert cli("ingest", str(root), "--option", "nonsense").exit_code == ExitCode.USAGE


def test_bench_functions_run_small(tmp_path: Path) -> None:
    from memctl.ingest.bench import bench_mbox, bench_noop

    noop = bench_noop(n_files=10, workdir=tmp_path / "b1")
    assert noop["ingest_noop_10k_files_s"] >= 0 and noop["files"] == 10
    mbox = bench_mbox(mb=0.05, workdir=tmp_path / "b2")
    assert mbox["ingest_mbox_100mb_s"] > 0 and mbox["mbox_messages"] > 10
    assert mbox["mbox_failed"] == 0 and mbox["mbox_records"] >= mbox["mbox_messages"] > 10


def test_cli_bench_ingest_json_is_a_flat_object_of_numbers(tmp_path: Path) -> None:
    wd = str(tmp_path)
    r = runner.invoke(
        app, ["bench", "ingest", "--json", "--files", "20", "--mbox-mb", "0.05", "--workdir", wd]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    expected = {
        "load_1m_before",
        "files",
        "ingest_initial_files_s",
        "initial_records",
        "ingest_noop_10k_files_s",
        "noop_files_read",
        "ingest_noop_10k_files_cli_s",
        "mbox_mb",
        "mbox_messages",
        "mbox_records",
        "mbox_failed",
        "ingest_mbox_100mb_s",
        "ingest_mbox_mb_per_s",
        "load_1m_after",
    }
    assert set(out) == expected
    bad = {k: v for k, v in out.items() if isinstance(v, bool) or not isinstance(v, int | float)}
    assert bad == {}
    assert out["files"] == 20 and out["initial_records"] == 40 and out["noop_files_read"] == 0
    assert out["mbox_failed"] == 0 and out["mbox_records"] >= out["mbox_messages"] > 10
    wd = str(tmp_path / "t")
    table = runner.invoke(
        app, ["bench", "ingest", "--files", "5", "--mbox-mb", "0.02", "--no-cli", "--workdir", wd]
    )
    assert table.exit_code == 0 and "ingest_mbox_100mb_s" in table.stdout


# -- the batch writer: set-wise, yet as if each record were written alone, in order -----------
def _state(vault: Any) -> dict[str, Any]:
    """What a batch left: records (ids replaced by their order), FTS, keys, tags, journal."""
    conn = vault.conn
    rows = conn.execute(
        "SELECT rowid, id, body, source, locator, version, tags FROM records ORDER BY rowid"
    ).fetchall()
    order = {row[1]: n for n, row in enumerate(rows)}
    fts = {
        word: sorted(
            order[rid]
            for (rid,) in conn.execute(
                "SELECT r.id FROM records_fts JOIN records r ON r.rowid = records_fts.rowid "
                "WHERE records_fts MATCH ?",
                (word,),
            )
        )
        for word in ("alpha", "beta", "gamma", "delta", "epsilon")
    }
    conn.execute("INSERT INTO records_fts(records_fts, rank) VALUES ('integrity-check', 1)")
    keyed = conn.execute(
        "SELECT count(*) FROM records r JOIN record_keys k ON k.record_rowid = r.rowid"
    ).fetchone()[0]
    tags = conn.execute("SELECT count(*) FROM record_tags").fetchone()[0]
    events = []
    for rid in order:  # each record's events, readable with its own key
        evs = vault.history.record_events(rid, vault.record_key(rid))
        assert all(e["readable"] for e in evs)
        events.append([(e["op"], e["payload"]["version"]) for e in evs])
    return {
        "records": [row[2:] for row in rows],
        "fts": fts,
        "keyed": keyed,
        "tags": tags,
        "events": events,
        "order": order,
    }


def _normalise(summary: Any, order: dict[str, int]) -> tuple[Any, ...]:
    return (
        summary.added,
        summary.updated,
        summary.skipped,
        summary.failed,
        [order[i] for i in summary.ids],
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_batch_equals_one_record_at_a_time(tmp_path: Path, seed: int) -> None:
    """Duplicates, versions of records stored earlier in the same batch, and a content freed
    by a version and then stored again: one batch ends exactly where per-record writes end."""
    import random

    import memctl
    from tests.conftest import FAST_KDF, PASSPHRASE

    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    items: list[dict[str, Any]] = []
    for _ in range(120):
        item: dict[str, Any] = {
            "text": f"{rng.choice(words)} {rng.choice(words)} {rng.randint(0, 6)}"
        }
        if rng.random() < 0.7:
            item.update(source=f"file:///s{rng.randint(0, 2)}", locator=f"L{rng.randint(0, 5)}")
        if rng.random() < 0.3:
            item["tags"] = [rng.choice(words)]
        if rng.random() < 0.2:
            item["namespace"] = "other"
        items.append(item)
    last: dict[tuple[Any, ...], dict[str, Any]] = {}
    for n, item in enumerate(items):  # one item per identity: what a well-behaved source gives
        key = (item.get("namespace"), item.get("source"), item.get("locator") or n)
        last[key] = item
    settled_items = list(last.values())
    seen = []
    for batch_size in (1000, 7, 1):
        path = tmp_path / f"v{batch_size}"
        memctl.init_vault(path, passphrase=PASSPHRASE, **FAST_KDF)
        with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
            first = v.ingest_many(items[:40], batch_size=batch_size)
            second = v.ingest_many(items, batch_size=batch_size)
            again = v.ingest_many(items, batch_size=batch_size)  # versions cycle: same items
            settled = v.ingest_many(settled_items, batch_size=batch_size)
            rerun = v.ingest_many(settled_items, batch_size=batch_size)
            assert rerun.added == rerun.updated == 0  # idempotent: a re-run adds nothing
            state = _state(v)
            order = state.pop("order")
            summaries = [_normalise(s, order) for s in (first, second, again, settled, rerun)]
            seen.append((state, summaries))
            assert state["keyed"] == len(state["records"])
            assert v.audit_verify()["ok"] is True
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][1][1][1] > 0  # the items did exercise versions


def test_a_failed_batch_leaves_nothing(vault: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from memctl.vault.history import History

    vault.ingest_many([{"text": "kept before", "tags": ["a"]}])

    def boom(*args: Any, **kw: Any) -> None:
        raise OSError("journal write failed")

    monkeypatch.setattr(History, "commit", boom)
    items = [{"text": f"alpha lost {i}", "tags": ["t"]} for i in range(50)]
    with pytest.raises(OSError):
        vault.ingest_many(items)
    monkeypatch.undo()
    conn = vault.conn
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM record_keys").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM record_tags").fetchone()[0] == 1
    assert (
        conn.execute("SELECT count(*) FROM records_fts WHERE records_fts MATCH 'lost'").fetchone()[
            0
        ]
        == 0
    )
    staged = conn.execute(
        "SELECT count(*) FROM temp.sqlite_master WHERE name = 'memctl_ingest_stage'"
    ).fetchone()[0]
    if staged:
        assert conn.execute("SELECT count(*) FROM temp.memctl_ingest_stage").fetchone()[0] == 0
    summary = vault.ingest_many(items)
    assert summary.added == 50
    assert [h["text"] for h in vault.recall("lost", mode="keyword", limit=1)] != []


def test_prune_after_a_rename_keeps_the_content(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    old = write(root / "old-name.md", "# Trip\n\nBook the night train to Vienna.\n")
    run_ingest(vault, [str(root)])
    old.rename(root / "new-name.md")  # read first (de-duplicated), then the old one is pruned
    report = run_ingest(vault, [str(root)], config=IngestConfig(prune=True))
    assert report.pruned == 1
    (rec,) = records(vault)
    assert rec["locator"] == "new-name.md#trip" and "Vienna" in rec["text"]
    assert run_ingest(vault, [str(root)], config=IngestConfig(prune=True)).counts()[:2] == (0, 0)


def test_prune_after_a_section_moves_to_another_file(vault: Any, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    a = write(root / "a.md", "# A\n\n## Keep\n\nstays in a\n\n## Move\n\nwanders off to b\n")
    b = write(root / "b.md", "# B\n\nonly b\n")
    run_ingest(vault, [str(root)])
    a.write_text("# A\n\n## Keep\n\nstays in a\n")
    b.write_text("# B\n\nonly b\n\n## Move\n\nwanders off to b\n")
    for f in (a, b):
        os.utime(f, ns=(1, 10**18))
    run_ingest(vault, [str(root)], config=IngestConfig(prune=True))
    got = by_locator(vault)
    assert got["b.md#b/move"]["text"] == "wanders off to b" and "a.md#a/move" not in got


# -- memctl plugins and plugin commands --------------------------------------------------------
BROKEN = "import nonexistent_dependency_for_memctl_tests\n"
COMMANDS = """
import typer
from memctl.ingest.hookspecs import hookimpl

hello = typer.Typer()

@hello.command("say")
def say() -> None:
    typer.echo("hello from a plugin")

@hookimpl
def memctl_commands(app):
    app.add_typer(hello, name="hello")
"""


@pytest.fixture
def plugin_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import importlib.metadata as md
    import sys

    from memctl.ingest import plugins

    src = tmp_path / "plugin_src"
    src.mkdir()
    (src / "memctl_test_broken.py").write_text(BROKEN)
    (src / "memctl_test_cmds.py").write_text(COMMANDS)
    monkeypatch.syspath_prepend(str(src))
    for name in ("memctl_test_broken", "memctl_test_cmds"):
        sys.modules.pop(name, None)
    host = PluginHost(
        entry_points=[
            md.EntryPoint("broken", "memctl_test_broken", "memctl"),
            md.EntryPoint("cmds", "memctl_test_cmds", "memctl"),
        ]
    )
    plugins.reset_host(host)
    yield host
    plugins.reset_host(None)


def test_cli_plugins_lists_json_and_warns_on_stderr(plugin_host: Any) -> None:
    r = cli("plugins", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    by_name = {row["name"]: row for row in rows}
    assert {"markdown", "records", "mail", "chat", "shell", "bookmarks", "cmds"} <= set(by_name)
    md_row = by_name["markdown"]
    assert md_row["hooks"] == ["memctl_sources"] and md_row["version"] and md_row["builtin"]
    assert md_row["sources"] == ["markdown", "text"]
    assert by_name["cmds"]["hooks"] == ["memctl_commands"] and not by_name["cmds"]["builtin"]
    assert "broken" not in by_name
    assert "plugin 'broken'" in r.stderr and "ModuleNotFoundError" in r.stderr
    plain = cli("plugins").stdout.splitlines()
    assert plain[0].split("\t")[:3] == ["markdown", md_row["version"], "builtin"]


def test_plugin_commands_load_only_when_they_can_matter(
    plugin_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from memctl.cli import plugins_cmd

    assert plugins_cmd.command_name(["--vault", "v", "-q", "recall", "x"]) == "recall"
    assert plugins_cmd.command_name(["--vault=v", "hello", "say"]) == "hello"
    assert plugins_cmd.command_name(["--help"]) is None

    def fresh() -> typer.Typer:
        app = typer.Typer()
        app.command("recall")(lambda: None)
        return app

    app = fresh()
    plugins_cmd.register_plugin_commands(app, ["hello", "say"])
    assert [g.name for g in app.registered_groups] == ["hello"]
    result = runner.invoke(app, ["hello", "say"])
    assert result.exit_code == 0 and "hello from a plugin" in result.stdout

    loaded: list[bool] = []
    monkeypatch.setattr("memctl.ingest.plugins.get_host", lambda: loaded.append(True))
    app = fresh()
    plugins_cmd.register_plugin_commands(app, ["recall", "x"])
    assert loaded == [] and app.registered_groups == []
    plugins_cmd.register_plugin_commands(app, ["--help"])
    assert loaded == [True]  # `memctl --help` lists plugin commands too


def test_prune_lookup_uses_the_source_index(vault: Any) -> None:
    vault.ingest_many([{"text": f"t{i}", "source": "x://s", "locator": f"L{i}"} for i in range(5)])
    statements: list[str] = []
    vault.conn.set_trace_callback(statements.append)
    try:
        ids = cur.record_ids(vault.conn, "default", {"x://s": ["L1", "L3", "L9"]})
    finally:
        vault.conn.set_trace_callback(None)
    assert len(ids) == 2
    (sql,) = [s for s in statements if "FROM records" in s]
    plan = " ".join(str(row) for row in vault.conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert "records_source" in plan, plan  # not a scan of the whole namespace
