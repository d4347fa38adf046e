"""Hostile input: the query parser and recall, the header parser, the inbox envelope parser.

Random bytes, deep nesting, giant fields, invalid UTF-8 and lone surrogates. The rule: only
memctl's own exceptions ever come out (a usage error, a corrupt/rejected file), never an
unhandled one, and memory stays bounded (tracemalloc) on giant inputs.

The source plugins' parsers are fuzzed in ``tests/test_sources.py`` (mutated fixtures, random
bytes and JSON-shaped inputs for every built-in source, big inputs streamed in bounded memory);
that is not repeated here. What this module adds for sources is what only shows up once their
items reach the vault: a locator unique per item.

Each property runs 25 examples in the fast suite and ``MEMCTL_FUZZ_EXAMPLES`` (default 1500)
under ``-m slow``; the number of cases run is printed at the end of the module (``-s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memctl
from memctl.errors import AuthenticationError, CorruptVault, UsageError

from .conftest import PASSPHRASE
from .consistency import assert_clean_stderr, check_whole, child_env, run_cli

CASES: Counter[str] = Counter()
FAST = settings(
    max_examples=25,
    derandomize=True,  # the fast suite is repeatable; the slow one explores
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
SLOW = settings(
    FAST,
    max_examples=int(os.environ.get("MEMCTL_FUZZ_EXAMPLES", "1500")),
    derandomize=False,
)
MiB = 1 << 20


def both(fn: Callable[..., None], **strategies: Any) -> tuple[Any, Any]:
    """A fast test and a ``slow`` one (many more examples) for the same property."""
    fast = FAST(given(**strategies)(fn))
    slow = pytest.mark.slow(SLOW(given(**strategies)(fn)))
    return fast, slow


@pytest.fixture(scope="module", autouse=True)
def _count_cases() -> Iterator[None]:
    yield
    print(f"\nfuzz cases run: {sum(CASES.values())} {dict(CASES)}")


def peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- strategies --------------------------------------------------------------------------------
ANY_CHAR = st.characters(exclude_categories=())  # lone surrogates and controls included
FTS_SOUP = st.lists(
    st.sampled_from(
        [
            '"',
            "'",
            "(",
            ")",
            "*",
            "^",
            ":",
            "-",
            "+",
            "NEAR(",
            "NEAR/3",
            "AND",
            "OR",
            "NOT",
            "{title body}",
            "body:",
            "a",
            "zqfuzz",
            "\x00",
            "\u202e",
            "😀",
            "ﬁ",
            "İ",
            "ß",
        ]
    ),
    max_size=40,
).map(" ".join)
INVALID_UTF8 = st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape"))
QUERY = st.one_of(st.text(ANY_CHAR, max_size=300), FTS_SOUP, INVALID_UTF8)


def nasty_queries(scale: int) -> list[str]:
    """Deep nesting, giant tokens, floods of syntax; ``scale`` ~ the size in bytes."""
    return [
        "(" * scale,
        '"' * (scale + 1),
        "NEAR(" * (scale // 5),
        "a* " * (scale // 3),
        "zqfuzz " * (scale // 7),  # one word over and over
        "x" * scale,  # one giant token
        "\x00" * (scale // 10),
        "\ud800" * (scale // 10),
        " ".join(f"w{i}" for i in range(scale // 8)),
        "é" * (scale // 5) + "\u0301" * (scale // 5),  # combining marks: NFKC work
    ]


NASTY_QUERIES = nasty_queries(100_000)


# -- the query parser and recall over a real vault ------------------------------------------
@pytest.fixture(scope="module")
def fuzz_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("fuzz") / "vault"
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        v.ingest_many(
            [
                {"text": "Plant the tulip bulbs in October zqfuzz", "tags": ["garden"]},
                {"text": 'NEAR the park: "quotes" and (brackets) zqfuzz*', "title": "syntax"},
                {"text": "Ünïcödé façade naïve café ﬁsh İstanbul straße 😀"},
                {"text": "plain words only"},
            ]
        )
        yield v


def check_recall(vault: Any, query: str) -> None:
    CASES["recall"] += 1
    for mode in ("keyword", "vector", "hybrid"):
        hits = vault.recall(query, mode=mode, limit=5)
        assert isinstance(hits, list) and len(hits) <= 5
        for hit in hits:
            assert isinstance(hit["id"], str) and isinstance(hit["score"], float)


def _recall_property(fuzz_vault: Any, query: str) -> None:
    check_recall(fuzz_vault, query)


test_recall_any_query, test_recall_any_query_slow = both(_recall_property, query=QUERY)


@pytest.mark.parametrize("index", range(len(NASTY_QUERIES)))
def test_recall_nasty_queries(fuzz_vault: Any, index: int) -> None:
    query = NASTY_QUERIES[index]
    check_recall(fuzz_vault, query)
    # The query parser and keyword search hold memory proportional to the query, no more.
    # (Vector modes embed the text: the test embedder's memory is not memctl's to bound.)
    peak = peak_bytes(lambda: fuzz_vault.recall(query, mode="keyword", limit=5))
    size = len(query.encode("utf-8", "surrogatepass"))
    assert peak < 8 * MiB + 40 * size, (peak, size)


@pytest.mark.slow
def test_recall_megabyte_queries(fuzz_vault: Any) -> None:
    for query in nasty_queries(MiB):
        check_recall(fuzz_vault, query)
        peak = peak_bytes(lambda q=query: fuzz_vault.recall(q, mode="keyword", limit=5))
        assert peak < 8 * MiB + 40 * len(query.encode("utf-8", "surrogatepass")), peak


# What the CLI and MCP can pass (MCP's schema: a string, or a string or list of strings).
TEXT40 = st.text(ANY_CHAR, max_size=40)
ONE_OR_MANY = st.one_of(st.none(), TEXT40, st.lists(TEXT40, max_size=4))


def _filters_property(fuzz_vault: Any, query: str, since: Any, tags: Any, ns: Any) -> None:
    CASES["recall filters"] += 1
    try:
        hits = fuzz_vault.recall(
            query, mode="keyword", since=since, tags=tags, namespace=ns, limit=3
        )
    except UsageError:
        return
    assert isinstance(hits, list)


test_recall_any_filters, test_recall_any_filters_slow = both(
    _filters_property, query=QUERY, since=st.none() | TEXT40, tags=ONE_OR_MANY, ns=ONE_OR_MANY
)


def test_cli_recall_with_invalid_utf8_and_giant_argv(fuzz_vault: Any, tmp_path: Path) -> None:
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    env = child_env(fuzz_vault.path, passfile)
    for arg in (b"\xff\xfe\xfd zqfuzz", b"(((" * 30_000, b"\xed\xa0\x80", b"-- --json"):
        CASES["cli recall"] += 1
        proc = subprocess.run(
            [os.fsencode(str(run_cli.__globals__["MEMCTL"])), b"recall", arg, b"--json"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        stderr = proc.stderr.decode("utf-8", "replace")
        assert_clean_stderr(stderr)
        assert proc.returncode in (0, 2), (arg[:20], proc.returncode, stderr)
        if proc.returncode == 0:
            assert isinstance(json.loads(proc.stdout), list)


# -- the header parser -------------------------------------------------------------------------
def _valid_header(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("hdr") / "vault"
    memctl.init_vault(path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model=None)
    return json.loads((path / "header.json").read_text())


@pytest.fixture(scope="module")
def header_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _valid_header(tmp_path_factory)


def parse_header(raw: bytes) -> Any:
    from memctl.vault.header import Header

    CASES["header"] += 1
    try:
        header = Header.parse(raw)
    except CorruptVault as exc:
        assert "header.json" in exc.message
        return None
    # Whatever parses serialises back to something that parses to the same thing.
    again = Header.parse(json.dumps(header.to_json()).encode())
    assert again.to_json() == header.to_json()
    return header


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(ANY_CHAR, max_size=30),
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=20,
)
HEADER_KEYS = [
    "format",
    "version",
    "vault_id",
    "public_mac",
    "keyslots",
    "inbox",
    "model",
    "id",
    "type",
    "wrapped",
    "kdf",
    "salt",
    "name",
    "memory_kib",
    "iterations",
    "lanes",
    "n",
    "r",
    "p",
    "public_key",
    "private_wrapped",
    "label",
]


def mutate(doc: Any, path: list[int], value: Any) -> Any:
    """Replace the node reached by following ``path`` (indices into keys/items) with value."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    key = keys[path[0] % len(keys)]
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    out[key] = mutate(doc[key], path[1:], value)
    return out


def _header_bytes_property(raw: bytes) -> None:
    parse_header(raw)


def _header_mutation_property(header_json: dict[str, Any], path: list[int], value: Any) -> None:
    def dumps(doc: Any) -> bytes:
        return json.dumps(doc, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")

    parse_header(dumps(mutate(header_json, path, value)))


def _header_shape_property(doc: Any) -> None:
    parse_header(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"))


test_header_random_bytes, test_header_random_bytes_slow = both(
    _header_bytes_property, raw=st.binary(max_size=2000)
)
test_header_mutations, test_header_mutations_slow = both(
    _header_mutation_property,
    path=st.lists(st.integers(min_value=0, max_value=50), max_size=5),
    value=JSON_ANY,
)
test_header_json_shapes, test_header_json_shapes_slow = both(
    _header_shape_property,
    doc=st.dictionaries(st.sampled_from(HEADER_KEYS), JSON_ANY, max_size=10).map(
        lambda d: {"format": "memctl-vault", "version": 1, **d}
    ),
)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 500_000,
        b'{"format": "memctl-vault", "version": 1, "keyslots": ' + b"[" * 200_000,
        b'{"a": "' + b"x" * (2 * MiB) + b'"}',  # over the 1 MiB limit
        b'{"format": "memctl-vault", "version": 1, "model": {"name": "' + b"\xff" * 1000 + b'"}}',
        b"\xef\xbb\xbf{}",  # a BOM
        b"",
        b"\x00" * 4096,
    ],
    ids=["deep-array", "deep-keyslots", "giant", "invalid-utf8", "bom", "empty", "nul"],
)
def test_header_nasty_in_bounded_memory(raw: bytes) -> None:
    peak = peak_bytes(lambda: parse_header(raw))
    assert peak < 16 * MiB + 4 * len(raw), peak


def test_header_bounds_on_huge_numbers(header_json: dict[str, Any]) -> None:
    slot = header_json["keyslots"][0]
    for field, value in [
        ("memory_kib", 2**62),  # would exhaust memory at unlock
        ("memory_kib", 4 * 1024 * 1024 + 1),
        ("memory_kib", 1024),  # a downgrade
        ("iterations", 10**30),
        ("iterations", 0),
        ("lanes", 0),
        ("memory_kib", -1),
        ("salt", "AAAA"),
        ("name", "pbkdf2"),
    ]:
        doc = json.loads(json.dumps(header_json))
        doc["keyslots"][0] = {**slot, "kdf": {**slot["kdf"], field: value}}
        assert parse_header(json.dumps(doc).encode()) is None, (field, value)


# -- the inbox envelope parser ----------------------------------------------------------------
@pytest.fixture(scope="module")
def inbox_vault(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from memctl.ingest import inbox

    path = tmp_path_factory.mktemp("inbox") / "vault"
    memctl.init_vault(path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model=None)
    header = inbox.public_header(path)
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        from memctl.ingest.inbox import _inbox_private_key

        private = _inbox_private_key(v)
    return {"path": path, "header": header, "private": private}


def open_sealed(inbox_vault: dict[str, Any], plaintext: bytes, tmp: Path) -> Any:
    """Seal ``plaintext`` as an attacker holding the public key can, then parse it."""
    from memctl.crypto.seal import seal
    from memctl.ingest.inbox import RejectedEnvelope, open_envelope_file

    CASES["envelope"] += 1
    header = inbox_vault["header"]
    envelope = tmp / "x.env"
    envelope.write_bytes(seal(header.inbox_public, plaintext, vault_id=header.vault_id))
    try:
        actor, items = open_envelope_file(envelope, inbox_vault["private"], header.vault_id)
    except RejectedEnvelope as exc:
        assert str(exc)
        return None
    assert isinstance(actor, str) and items and all(isinstance(i, dict) for i in items)
    return items


def _envelope_bytes_property(inbox_vault: dict[str, Any], blob: bytes) -> None:
    from memctl.crypto.seal import open_envelope

    CASES["envelope bytes"] += 1
    header = inbox_vault["header"]
    with pytest.raises(AuthenticationError):
        open_envelope(inbox_vault["private"], blob, vault_id=header.vault_id)
    prefix = b"MCIB\x01" + header.vault_id + blob  # well-formed prefix, garbage after
    with pytest.raises(AuthenticationError):
        open_envelope(inbox_vault["private"], prefix, vault_id=header.vault_id)


ITEM = st.dictionaries(
    st.sampled_from(
        [
            "text",
            "title",
            "tags",
            "namespace",
            "kind",
            "source",
            "locator",
            "observed_at",
            "context",
            "meta",
            "plugin",
            "trust",
            "actor",
            "id",
        ]
    ),
    JSON_ANY,
    max_size=6,
)
PAYLOAD = st.fixed_dictionaries(
    {},
    optional={
        "format": st.one_of(st.just("memctl-inbox/1"), JSON_LEAF),
        "actor": st.one_of(st.sampled_from(["inbox", "cron:x", "cli", "mcp:y"]), JSON_LEAF),
        "items": st.one_of(st.lists(ITEM, max_size=4), JSON_ANY),
        "sealed_at": JSON_LEAF,
    },
)


def _payload_property(inbox_vault: dict[str, Any], tmp_path_factory: Any, payload: Any) -> None:
    tmp = tmp_path_factory.mktemp("env", numbered=True)
    raw = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    open_sealed(inbox_vault, raw, tmp)


def _plaintext_property(inbox_vault: dict[str, Any], tmp_path_factory: Any, raw: bytes) -> None:
    open_sealed(inbox_vault, raw, tmp_path_factory.mktemp("env", numbered=True))


test_envelope_random_bytes, test_envelope_random_bytes_slow = both(
    _envelope_bytes_property, blob=st.binary(max_size=400)
)
test_envelope_hostile_payloads, test_envelope_hostile_payloads_slow = both(
    _payload_property, payload=PAYLOAD
)
test_envelope_random_plaintexts, test_envelope_random_plaintexts_slow = both(
    _plaintext_property, raw=st.binary(max_size=500)
)


NASTY_PAYLOADS = {
    "deep-items": b'{"format": "memctl-inbox/1", "actor": "inbox", "items": '
    + b"[" * 300_000
    + b"]" * 300_000
    + b"}",
    "deep-meta": b'{"format": "memctl-inbox/1", "actor": "inbox", "items": [{"text": "x", "meta": '
    + b'{"a": ' * 100_000
    + b"1"
    + b"}" * 100_000
    + b"}]}",
    "giant-text": json.dumps(
        {"format": "memctl-inbox/1", "actor": "inbox", "items": [{"text": "w " * MiB}]}
    ).encode(),
    "many-items": json.dumps(
        {"format": "memctl-inbox/1", "actor": "inbox", "items": [{"text": "y"}] * 5_000}
    ).encode(),
    "invalid-utf8": b'{"format": "memctl-inbox/1", "actor": "inbox", '
    b'"items": [{"text": "\xff\xfe"}]}',
    "surrogate-escape": b'{"format": "memctl-inbox/1", "actor": "inbox", "items": '
    b'[{"text": "\\ud800 lone"}]}',
    "nul-and-bidi": json.dumps(
        {
            "format": "memctl-inbox/1",
            "actor": "inbox",
            "items": [{"text": "a\x00b\u202ec", "tags": ["\x00"], "source": "\u202e"}],
        }
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(NASTY_PAYLOADS))
def test_envelope_nasty_payloads_in_bounded_memory(
    inbox_vault: dict[str, Any], tmp_path: Path, name: str
) -> None:
    raw = NASTY_PAYLOADS[name]
    peak = peak_bytes(lambda: open_sealed(inbox_vault, raw, tmp_path))
    assert peak < 32 * MiB + 12 * len(raw), (peak, len(raw))


def test_hostile_envelopes_on_import_leave_the_vault_whole(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """End to end: a key-less writer drops hostile envelopes; the next unlock copes."""
    from memctl.crypto.seal import seal
    from memctl.ingest import inbox

    path = tmp_path / "vault"
    memctl.init_vault(path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model=None)
    header = inbox.public_header(path)
    good = inbox.seal_items(path, [{"text": "a good sealed note zqgood"}], actor="inbox")
    for n, raw in enumerate([*NASTY_PAYLOADS.values(), b"\x00" * 100, b"{}", b"[]"]):
        (path / "inbox" / f"01ARZ3NDEKTSV4RRFFQ69G5F{n:02d}.env").write_bytes(
            seal(header.inbox_public, raw, vault_id=header.vault_id)
        )
    (path / "inbox" / "01ARZ3NDEKTSV4RRFFQ69G5FZZ.env").write_bytes(os.urandom(300))
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        check_whole(v)
        texts = sorted(r["text"] for r in v.list(limit=100))
        assert "a good sealed note zqgood" in texts
        assert v.audit_verify()["ok"]
    err = capfd.readouterr().err
    assert_clean_stderr(err)
    assert not any(p.exists() for p in good)
    left = sorted(p.name for p in (path / "inbox").glob("*.env"))
    assert left == [], left


# -- what only shows once items reach the vault: one locator per item ------------------------
def test_text_source_locators_are_unique_for_a_giant_line(tmp_path: Path) -> None:
    """Found by this suite: every piece of one over-long line had the locator 'f.txt#L1-L1',
    so the vault kept them as versions of one record (with a model the file failed). Fixed in
    plugins/memctl_plugins/markdown.py iter_text (pieces after the first get '@n')."""
    from memctl.ingest.sources import SourceRun, get_source

    path = tmp_path / "one-line.txt"
    path.write_text(" ".join(f"word{i}" for i in range(40_000)) + "\n")
    items = list(SourceRun(get_source("text"), path))
    assert len(items) > 10
    locators = [i["locator"] for i in items]
    assert len(set(locators)) == len(locators), locators[:3]


def test_same_locator_twice_in_one_batch(tmp_path: Path) -> None:
    """Found by this suite: with a model, the batch failed ('duplicate rowids in one put_many
    call'). Fixed in Vault._write_batch: one vector per rowid, the batch's last item wins."""
    path = tmp_path / "vault"
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        summary = v.ingest_many(
            [
                {"text": "first text of the item", "source": "file:///a", "locator": "x"},
                {"text": "second text of the item", "source": "file:///a", "locator": "x"},
            ]
        )
        assert summary.failed == 0 and len(set(summary.ids)) == 1
        record = v.get(summary.ids[0])
        assert record["text"] == "second text of the item" and record["version"] == 2
        check_whole(v)


# -- invalid Unicode reaching the vault --------------------------------------------------------
@pytest.mark.parametrize("field", ["text", "title", "tags", "source", "locator", "context", "meta"])
def test_lone_surrogates_are_refused_with_a_reason(vault: Any, field: str) -> None:
    """Found by this suite: a lone surrogate (invalid UTF-8 in argv, ``\\ud800`` in MCP JSON or
    in a sealed envelope) raised UnicodeEncodeError half-way through the write — a traceback
    from ``memctl ingest --text``, and every unlock failed while such an envelope waited in the
    inbox. Fixed in memctl/vault/records.py prepare(): refused as a usage error."""
    bad = "broken \ud800 input"
    item: dict[str, Any] = {"text": "a fine text"}
    item[field] = [bad] if field == "tags" else {"note": bad} if field == "meta" else bad
    with pytest.raises(UsageError, match="Unicode"):
        vault.ingest_many([item], strict=True)
    summary = vault.ingest_many([item, {"text": "the next item is kept"}])
    assert summary.failed == 1 and summary.added == 1
    check_whole(vault)


def test_cli_ingest_invalid_utf8_argv(vault_path: Path, tmp_path: Path) -> None:
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    env = child_env(vault_path, passfile)
    memctl_bin = os.fsencode(str(run_cli.__globals__["MEMCTL"]))
    for args in ([b"--text", b"bad \xff byte"], [b"--text", b"ok", b"--tag", b"\xfe"]):
        CASES["cli ingest"] += 1
        proc = subprocess.run(
            [memctl_bin, b"ingest", *args], env=env, capture_output=True, timeout=60, check=False
        )
        stderr = proc.stderr.decode("utf-8", "replace")
        assert_clean_stderr(stderr)
        assert proc.returncode in (2, 9), (args, proc.returncode, stderr)
        assert "Unicode" in stderr, stderr
