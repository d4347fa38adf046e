"""`memctl mcp`: the tools, the policy under every tool, start-up, and real clients.

Most tests spawn the real server and drive it with the MCP SDK's own stdio client; the policy
and argument checks are also tested in-process against :class:`Toolbox`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import memctl
from memctl.errors import BadPassphrase, RecordNotFound, Refused, UsageError, VaultLocked
from memctl.mcp import launcher
from memctl.mcp.policy import Policy, PolicySet, actor_for, sanitise_client_name
from memctl.mcp.tools import (
    MAX_RECALL_LIMIT,
    NOTICE,
    Toolbox,
    ToolError,
    VaultSession,
    check_arguments,
    credentials_factory,
    tool_definitions,
)

from .conftest import PASSPHRASE

MEMCTL = Path(sys.executable).with_name("memctl")
ALL_TOOLS = {"remember", "recall", "get_memory", "list_memories", "forget", "provenance"}


# -- helpers -----------------------------------------------------------------------------------
def seed(vault_path: Path) -> dict[str, str]:
    """A person's notes in two namespaces; returns their ids by namespace."""
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE, actor="cli") as v:
        return {
            "work": v.ingest("Quarterly planning meeting moved to the blue room", namespace="work"),
            "personal": v.ingest("Dentist appointment moved to Thursday", namespace="personal"),
        }


def child_env(pwfile: Path | None) -> dict[str, str]:
    env = {"NO_COLOR": "1", "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]}
    if pwfile is not None:
        env["MEMCTL_PASSPHRASE_FILE"] = str(pwfile)
    return env


Session = Any


def with_server(
    args: list[str],
    env: dict[str, str],
    body: Callable[[Session], Awaitable[Any]],
    *,
    client: str = "pytest client",
    errlog: Path | None = None,
) -> Any:
    """Spawn `memctl mcp ARGS`, initialize with the SDK client as ``client``, run ``body``."""
    import anyio
    import mcp_types as types
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=str(MEMCTL), args=["mcp", *args], env=env)

    async def main() -> Any:
        with open(errlog or os.devnull, "w") as err:
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(
                    read, write, client_info=types.Implementation(name=client, version="1.0")
                ) as session,
            ):
                await session.initialize()
                return await body(session)

    return anyio.run(main)


async def call(session: Session, tool: str, args: dict[str, Any] | None = None) -> Any:
    """(is_error, structured result or error text)."""
    result = await session.call_tool(tool, args or {})
    if result.is_error:
        return True, result.content[0].text
    assert json.loads(result.content[0].text) == result.structured_content
    return False, result.structured_content


async def tool_names(session: Session) -> set[str]:
    return {t.name for t in (await session.list_tools()).tools}


# -- policy ------------------------------------------------------------------------------------
def test_client_names_are_sanitised() -> None:
    assert sanitise_client_name("Claude Desktop") == "Claude Desktop"
    assert sanitise_client_name("evil\nname\x00; rm -rf /") == "evil_name__ rm -rf _"
    assert sanitise_client_name("\u202egnp.exe") == "_gnp.exe"
    assert sanitise_client_name("x" * 500) == "x" * 64
    assert sanitise_client_name("   ") == "unknown"
    assert sanitise_client_name(None) == "unknown"
    assert actor_for("cursor-vscode") == "mcp:cursor-vscode"


def test_policy_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "policy.toml"
    toml.write_text(
        "[default]\nnamespaces = ['agent']\n\n"
        '[clients."Claude Desktop"]\nnamespaces = ["work", "personal"]\nallow_erase = true\n\n'
        "[clients.cursor]\nread_only = true\n"
    )
    ps = PolicySet.from_file(toml)
    assert ps.for_client("someone else") == Policy(("agent",))
    claude = ps.for_client("Claude Desktop")
    assert claude.namespaces == ("work", "personal") and claude.can_erase
    assert claude.default_write_namespace == "work"
    assert ps.for_client("claude desktop") == claude  # case-insensitive fallback
    cursor = ps.for_client("cursor")
    assert cursor.read_only and cursor.namespaces == ("agent",)  # inherits [default]
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps({"clients": {"cursor": {"read_only": True}}}))
    assert PolicySet.from_file(as_json).for_client("cursor").read_only
    assert not PolicySet.from_file(as_json).for_client("other").restricted
    assert ps.tightened(read_only=True).for_client("Claude Desktop").can_erase is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[default]\nnamespace = ['a']\n", "unknown key"),
        ("[default]\nread_only = 'yes'\n", "true or false"),
        ("[default]\nnamespaces = ['a']\nwrite_namespace = 'b'\n", "not one of"),
        ("[default]\nnamespaces = ['bad name!']\n", "namespace must be"),
        ('[clients."bad\\tname"]\nread_only = true\n', "can never match"),
        ("[deafult]\n", "unknown key"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_policy_file_errors_are_loud(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        PolicySet.from_file(path)


def test_tools_listed_follow_the_policy() -> None:
    names = lambda p: {t["name"] for t in tool_definitions(p)}  # noqa: E731
    assert names(Policy()) == ALL_TOOLS - {"forget"}
    assert names(Policy(allow_erase=True)) == ALL_TOOLS
    assert names(Policy(read_only=True, allow_erase=True)) == ALL_TOOLS - {"forget", "remember"}
    recall = next(t for t in tool_definitions(Policy(("a", "b"))) if t["name"] == "recall")
    assert recall["inputSchema"]["properties"]["namespace"]["enum"] == ["a", "b"]
    for tool in tool_definitions(Policy(allow_erase=True)):
        assert tool["description"] and tool["inputSchema"]["type"] == "object"
        assert tool["inputSchema"]["additionalProperties"] is False


def test_docs_cover_every_tool_and_their_policy_example_parses() -> None:
    import re
    import tomllib

    doc = (Path(__file__).resolve().parent.parent / "docs" / "mcp.md").read_text()
    for name in ALL_TOOLS:
        assert f"| `{name}` |" in doc, f"docs/mcp.md does not document {name}"
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example
    policies = PolicySet.from_mapping(tomllib.loads(example.group(1)))
    assert policies.for_client("Claude Desktop").can_erase


# -- arguments ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("recall", {}, "missing required argument 'query'"),
        ("recall", {"query": 5}, "'query' must be a string"),
        ("recall", {"query": "  "}, "must not be empty"),
        ("recall", {"query": "x", "limit": "ten"}, "'limit' must be an integer"),
        ("recall", {"query": "x", "limit": True}, "'limit' must be an integer"),
        ("recall", {"query": "x", "limit": 0}, "at least 1"),
        ("recall", {"query": "x", "mode": "psychic"}, "one of: keyword"),
        ("recall", {"query": "x", "tags": "a,b"}, "'tags' must be an array"),
        ("recall", {"query": "x", "tags": [1]}, "list of strings"),
        ("recall", {"query": "x", "sql": "drop"}, "unknown argument"),
        ("recall", [1, 2], "arguments must be an object"),
        ("remember", {"text": "x" * 100_001}, "longer than 100000"),
        ("get_memory", {}, "missing required argument 'id'"),
        ("nonsense", {}, "unknown tool"),
    ],
)
def test_malformed_arguments_are_tool_errors(tool: str, args: Any, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        check_arguments(tool, args)


def test_huge_limit_is_clamped() -> None:
    assert check_arguments("recall", {"query": "x", "limit": 10**9})["limit"] == MAX_RECALL_LIMIT
    assert check_arguments("recall", {"query": "x", "limit": 7.0})["limit"] == 7


# -- the toolbox in-process: policy under every tool -----------------------------------------
def toolbox(vault_path: Path, policy: Policy, pwfile: Path | None) -> Toolbox:
    session = VaultSession(vault_path, credentials_factory(passphrase_file=pwfile))
    return Toolbox(session, PolicySet(policy))


def test_policy_holds_under_every_tool(vault_path: Path, pwfile: Path) -> None:
    ids = seed(vault_path)
    box = toolbox(vault_path, Policy(("work",), allow_erase=True), pwfile)
    try:
        hits = box.call("recall", {"query": "moved"}, "c")["hits"]
        assert [h["id"] for h in hits] == [ids["work"]]
        listed = box.call("list_memories", {}, "c")["memories"]
        assert [m["id"] for m in listed] == [ids["work"]]
        for tool, args in [
            ("get_memory", {"id": ids["personal"]}),
            ("provenance", {"id": ids["personal"]}),
            ("forget", {"id": ids["personal"]}),
        ]:
            with pytest.raises(RecordNotFound, match="no memory with id"):
                box.call(tool, args, "c")
        for tool, args in [
            ("recall", {"query": "dentist", "namespace": "personal"}),
            ("list_memories", {"namespace": "personal"}),
            ("remember", {"text": "sneaky", "namespace": "personal"}),
        ]:
            with pytest.raises(Refused, match="personal"):
                box.call(tool, args, "c")
        # A query that matches in both namespaces only reaches the allowed one.
        preview = box.call("forget", {"query": "moved", "dry_run": True}, "c")
        assert [m["id"] for m in preview["would_erase"]] == [ids["work"]]
        assert box.call("get_memory", {"id": ids["work"]}, "c")["memory"]["namespace"] == "work"
        stored = box.call("remember", {"text": "New desk is by the window"}, "c")
        assert stored["namespace"] == "work" and stored["actor"] == "mcp:c"
    finally:
        box.session.close()


def test_refusals_come_before_unlocking(vault_path: Path) -> None:
    box = toolbox(vault_path, Policy(read_only=True), None)  # no way to unlock at all
    with pytest.raises(Refused, match="read-only"):
        box.call("remember", {"text": "x"}, "c")
    with pytest.raises(Refused, match="read-only"):
        box.call("forget", {"id": "0" * 26}, "c")
    no_erase = toolbox(vault_path, Policy(), None)
    with pytest.raises(Refused, match="erasure is not allowed") as refused:
        no_erase.call("forget", {"query": "x"}, "c")
    assert "--allow-erase" in (refused.value.hint or "")
    with pytest.raises(VaultLocked) as info:
        box.call("recall", {"query": "x"}, "c")
    assert "MEMCTL_KEY_FILE" in (info.value.hint or "")


def test_wrong_passphrase_is_an_error_with_a_hint(vault_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not it\n")
    box = toolbox(vault_path, Policy(), bad)
    with pytest.raises(BadPassphrase) as info:
        box.call("list_memories", {}, "c")
    assert "docs/mcp.md" in (info.value.hint or "")


def test_prefix_ids_are_not_accepted(vault_path: Path, pwfile: Path) -> None:
    ids = seed(vault_path)
    box = toolbox(vault_path, Policy(), pwfile)
    try:
        with pytest.raises(ToolError, match="at least 26 characters"):
            box.call("get_memory", {"id": ids["work"][:10]}, "c")
        with pytest.raises(ToolError, match="full 26-character"):
            box.call("get_memory", {"id": "U" * 26}, "c")
        assert box.call("get_memory", {"id": ids["work"].lower()}, "c")["memory"]["id"]
    finally:
        box.session.close()


def test_forget_in_process_needs_vault_erase(vault_path: Path, pwfile: Path) -> None:
    ids = seed(vault_path)
    box = toolbox(vault_path, Policy(allow_erase=True), pwfile)
    try:
        with pytest.raises(ToolError, match="exactly one"):
            box.call("forget", {}, "c")
        with pytest.raises(ToolError, match="exactly one"):
            box.call("forget", {"id": ids["work"], "query": "x"}, "c")
        assert box.call("forget", {"query": "zzznothingmatches"}, "c")["erased"] == []
        receipt = box.call("forget", {"id": ids["personal"]}, "c")
        assert receipt["erased"] == [ids["personal"]] and receipt["dry_run"] is False
        with pytest.raises(RecordNotFound):
            box.call("get_memory", {"id": ids["personal"]}, "c")
        assert box.call("get_memory", {"id": ids["work"]}, "c")  # the other one stays
    finally:
        box.session.close()


def test_provenance_in_process_reports_audit_needs_vault_audit(
    vault_path: Path, pwfile: Path
) -> None:
    ids = seed(vault_path)
    box = toolbox(vault_path, Policy(), pwfile)
    try:
        assert hasattr(box.session.vault(), "audit"), "Vault.audit is not there yet"
        out = box.call("provenance", {"id": ids["work"]}, "c")
        assert out["actor"] == "cli" and (out["trust"], out["trust_name"]) == (3, "person")
        assert out["events"] and {"op", "time", "actor"} <= set(out["events"][0]), out
        assert all("payload" not in e for e in out["events"])
        json.dumps(out)  # plain data, ready for the wire
    finally:
        box.session.close()


# -- start-up ------------------------------------------------------------------------------
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "1999-01-01",
        "capabilities": {},
        "clientInfo": {"name": "raw client", "version": "0"},
    },
}
OPENING = [
    INIT,
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    {"jsonrpc": "2.0", "id": "three", "method": "ping"},
    {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": {"k": 1}}},
]


def raw_exchange(args: list[str], env: dict[str, str], messages: list[dict]) -> list[dict]:
    """Pipe ``messages`` into `memctl mcp` and return every stdout line, parsed."""
    data = "".join(json.dumps(m) + "\n" for m in messages)
    proc = subprocess.run(
        [str(MEMCTL), "mcp", *args],
        input=data,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]  # nothing but JSON-RPC


def test_early_answers_match_the_sdks(vault_path: Path) -> None:
    args = ["--vault", str(vault_path), "--namespace", "a", "--namespace", "b", "--read-only"]
    fast = raw_exchange(args, {}, OPENING)
    direct = raw_exchange(args, {launcher.DIRECT_ENV: "1"}, OPENING)
    assert [m["id"] for m in fast] == [1, 2, "three", 4]
    assert fast == direct
    assert fast[0]["result"]["protocolVersion"] == launcher.LATEST_HANDSHAKE
    assert {t["name"] for t in fast[1]["result"]["tools"]} == ALL_TOOLS - {"remember", "forget"}


def test_launcher_constants_match_the_sdk() -> None:
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

    assert tuple(HANDSHAKE_PROTOCOL_VERSIONS) == launcher.HANDSHAKE_VERSIONS


def test_spawn_to_tools_list_within_a_second(vault_path: Path) -> None:
    lines = "".join(json.dumps(m) + "\n" for m in OPENING[:3]).encode()
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(MEMCTL), "mcp", "--vault", str(vault_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdin and proc.stdout
            proc.stdin.write(lines)
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["id"] == 1
            assert "tools" in json.loads(proc.stdout.readline())["result"]
            best = min(best, time.perf_counter() - start)
        finally:
            proc.kill()
            proc.wait()
    assert best < 1.0, f"spawn → tools/list took {best:.2f} s"


def test_mcp_help_imports_no_sdk() -> None:
    probe = (
        "import sys; sys.argv = ['memctl', 'mcp', '--help']\n"
        "from memctl.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('mcp', 'mcp_types', 'anyio') if m in sys.modules), "
        "file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.stderr.strip().splitlines()[-1] == "[]"
    assert "--allow-erase" in proc.stdout


def test_bad_policy_file_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text("[default]\nbogus = 1\n")
    proc = subprocess.run(
        [str(MEMCTL), "mcp", "--policy", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2 and "unknown key(s) bogus" in proc.stderr and proc.stdout == ""


# -- real clients ------------------------------------------------------------------------------
def test_sdk_client_end_to_end(vault_path: Path, pwfile: Path, tmp_path: Path) -> None:
    seed(vault_path)
    errlog = tmp_path / "server.log"

    async def body(s: Session) -> None:
        assert await tool_names(s) == ALL_TOOLS - {"forget"}
        err, stored = await call(
            s, "remember", {"text": "Ada prefers tea over coffee", "tags": ["drinks"]}
        )
        assert not err and stored["status"] == "stored" and stored["actor"] == "mcp:Test Agent"
        rid = stored["id"]
        err, again = await call(s, "remember", {"text": "Ada prefers tea over coffee"})
        assert (again["id"], again["status"]) == (rid, "already stored")

        err, found = await call(s, "recall", {"query": "what does Ada drink?"})
        assert not err and found["notice"] == NOTICE
        hit = next(h for h in found["hits"] if h["id"] == rid)
        assert hit["text"] == "Ada prefers tea over coffee" and hit["tags"] == ["drinks"]
        assert hit["provenance"] == {"actor": "mcp:Test Agent", "trust": 1, "trust_name": "agent"}
        assert {"score", "source", "observed_at"} <= set(hit)

        err, trusted = await call(s, "recall", {"query": "moved Ada tea", "min_trust": "person"})
        assert (
            not err
            and trusted["hits"]
            and all(h["provenance"]["trust"] == 3 for h in trusted["hits"])
        )

        err, got = await call(s, "get_memory", {"id": rid})
        assert not err and got["memory"]["text"] == "Ada prefers tea over coffee"
        err, listed = await call(s, "list_memories", {"limit": 2})
        assert not err and listed["memories"][0]["id"] == rid
        assert listed["count"] == 2
        err, prov = await call(s, "provenance", {"id": rid})
        assert not err and prov["actor"] == "mcp:Test Agent" and prov["trust"] == 1

        res = await s.read_resource(f"memctl://record/{rid}")
        assert json.loads(res.contents[0].text)["memory"]["id"] == rid

        # Malformed calls are tool errors and the server keeps serving.
        for tool, args in [
            ("recall", {}),
            ("recall", {"query": ["a"]}),
            ("recall", {"query": "x", "limit": -3}),
            ("get_memory", {"id": "nope"}),
            ("no_such_tool", {}),
            ("recall", {"query": "x", "since": "the day before never"}),
            ("recall", {"query": "x", "mode": "vector"}),
        ]:
            err, text = await call(s, tool, args)
            assert err and text, (tool, args)
        err, big = await call(s, "recall", {"query": "Ada", "limit": 10**12})
        assert not err and big["limit"] == MAX_RECALL_LIMIT

        # Another process (a cron ingest, say) writes while the server holds the vault open.
        writer = (
            "import memctl, sys\n"
            "with memctl.open_vault(sys.argv[1], passphrase_file=sys.argv[2], actor='cli') as v:\n"
            "    v.ingest('Zanzibar trip booked for May')\n"
        )
        subprocess.run(
            [sys.executable, "-c", writer, str(vault_path), str(pwfile)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        err, found = await call(s, "recall", {"query": "Zanzibar"})
        assert not err and found["hits"][0]["text"] == "Zanzibar trip booked for May"
        assert found["hits"][0]["provenance"]["trust_name"] == "person"

    with_server(
        ["--vault", str(vault_path)], child_env(pwfile), body, client="Test Agent", errlog=errlog
    )
    log = errlog.read_text()
    assert "Test Agent" in log and "Ada" not in log and "Zanzibar" not in log
    assert "differs" not in log and "rejected" not in log  # the SDK agreed with the launcher


def test_read_only_server_refuses_writes_and_explains_locking(vault_path: Path) -> None:
    async def body(s: Session) -> None:
        assert await tool_names(s) == ALL_TOOLS - {"remember", "forget"}
        err, text = await call(s, "remember", {"text": "should not be stored"})
        assert err and "read-only" in text
        err, text = await call(s, "recall", {"query": "anything"})  # no unlock method given
        assert err and "locked" in text and "MEMCTL_KEY_FILE" in text and "memctl unlock" in text
        err, text = await call(s, "forget", {"query": "anything"})
        assert err and "read-only" in text

    with_server(["--vault", str(vault_path), "--read-only"], child_env(None), body)


def test_namespaced_server_sees_only_its_namespaces(vault_path: Path, pwfile: Path) -> None:
    ids = seed(vault_path)

    async def body(s: Session) -> None:
        err, found = await call(s, "recall", {"query": "moved"})
        assert not err and [h["id"] for h in found["hits"]] == [ids["work"]]
        err, text = await call(s, "get_memory", {"id": ids["personal"]})
        assert err and "no memory with id" in text
        err, text = await call(s, "recall", {"query": "dentist", "namespace": "personal"})
        assert err and "not available" in text
        err, listed = await call(s, "list_memories", {})
        assert {m["namespace"] for m in listed["memories"]} == {"work"}
        err, stored = await call(s, "remember", {"text": "Standup is at 9:30"})
        assert not err and stored["namespace"] == "work"
        err, text = await call(s, "forget", {"id": ids["work"]})
        assert err and "erasure is not allowed" in text
        with pytest.raises(Exception, match="no memory with id"):
            await s.read_resource(f"memctl://record/{ids['personal']}")

    with_server(["--vault", str(vault_path), "-n", "work"], child_env(pwfile), body)


def test_unlocks_through_the_agent(vault_path: Path, pwfile: Path) -> None:
    ids = seed(vault_path)
    base = [str(MEMCTL), "--vault", str(vault_path)]
    started = subprocess.run(
        [*base, "unlock", "--passphrase-file", str(pwfile), "--ttl", "2m", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if started.returncode != 0 and "No such command" in started.stderr:
        pytest.skip("this build has no agent (`memctl unlock`)")
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]

    async def body(s: Session) -> None:  # the server was given no credentials at all
        err, found = await call(s, "recall", {"query": "dentist"})
        assert not err and [h["id"] for h in found["hits"]] == [ids["personal"]]
        err, stored = await call(s, "remember", {"text": "Agent-served note"})
        assert not err
        err, prov = await call(s, "provenance", {"id": stored["id"]})
        assert not err and prov["actor"] == "mcp:pytest client" and prov["trust"] == 1

    try:
        with_server(["--vault", str(vault_path)], child_env(None), body)
    finally:
        subprocess.run([*base, "lock"], capture_output=True, timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def test_forget_over_mcp_needs_vault_erase(vault_path: Path, pwfile: Path) -> None:
    ids = seed(vault_path)

    async def body(s: Session) -> None:
        assert "forget" in await tool_names(s)
        err, preview = await call(s, "forget", {"query": "moved", "dry_run": True})
        assert not err and preview["dry_run"] is True
        assert [m["id"] for m in preview["would_erase"]] == [ids["work"]]  # not "personal"
        err, receipt = await call(s, "forget", {"id": ids["work"]})
        assert not err and receipt["erased"] == [ids["work"]] and receipt["dry_run"] is False
        err, text = await call(s, "get_memory", {"id": ids["work"]})
        assert err and "no memory" in text
        err, text = await call(s, "forget", {"id": ids["personal"]})
        assert err and "no memory with id" in text

    args = ["--vault", str(vault_path), "-n", "work", "--allow-erase"]
    with_server(args, child_env(pwfile), body)
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        assert v.get(ids["personal"])["namespace"] == "personal"


def test_policy_file_applies_per_client(vault_path: Path, pwfile: Path, tmp_path: Path) -> None:
    ids = seed(vault_path)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[default]\nread_only = true\nnamespaces = ['work']\n\n"
        '[clients."Claude Desktop"]\nnamespaces = ["personal"]\nread_only = false\n'
    )

    def check(client: str, expect_ns: str, writable: bool) -> None:
        async def body(s: Session) -> None:
            assert ("remember" in await tool_names(s)) is writable
            err, found = await call(s, "recall", {"query": "moved"})
            assert [h["id"] for h in found["hits"]] == [ids[expect_ns]]
            err, out = await call(s, "remember", {"text": f"note from {client}"})
            assert err is not writable
            if writable:
                assert out["namespace"] == expect_ns
                err, prov = await call(s, "provenance", {"id": out["id"]})
                assert prov["actor"] == f"mcp:{client}"

        with_server(["--vault", str(vault_path), "--policy", str(policy)], child_env(pwfile), body,
                    client=client)  # fmt: skip

    check("Claude Desktop", "personal", True)
    check("some other client", "work", False)


def test_modern_era_client_is_served(vault_path: Path, pwfile: Path) -> None:
    """The SDK's `Client` probes `server/discover` first: the launcher leaves that to the SDK."""
    import anyio
    import mcp_types as types
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=str(MEMCTL), args=["mcp", "--vault", str(vault_path)], env=child_env(pwfile)
    )

    async def main() -> None:
        info = types.Implementation(name="modern client", version="1")
        async with Client(params, mode="auto", client_info=info) as client:
            assert {t.name for t in (await client.list_tools()).tools} == ALL_TOOLS - {"forget"}
            result = await client.call_tool("remember", {"text": "Modern era note"})
            assert not result.is_error
            assert result.structured_content["actor"] == "mcp:modern client"

    anyio.run(main)


def _inspector(args: list[str]) -> subprocess.CompletedProcess[str]:
    import pwd

    # The test's HOME is a temporary one; npx keeps its download cache in the real one.
    cache = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".npm"
    return subprocess.run(
        ["npx", "-y", "@modelcontextprotocol/inspector", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "npm_config_cache": str(cache), "npm_config_update_notifier": "false"},
    )


def test_mcp_inspector_cli(vault_path: Path, pwfile: Path) -> None:
    if shutil.which("npx") is None:
        pytest.skip("Node.js/npx is not installed: the MCP Inspector CLI cannot run")
    seed(vault_path)
    base = ["--cli", "-e", f"MEMCTL_PASSPHRASE_FILE={pwfile}", str(MEMCTL), "mcp", "--vault",
            str(vault_path)]  # fmt: skip
    listed = _inspector([*base, "--method", "tools/list"])
    if listed.returncode != 0 and ("npm ERR" in listed.stderr or "npm error" in listed.stderr):
        pytest.skip(f"npx cannot fetch @modelcontextprotocol/inspector: {listed.stderr[-300:]}")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {t["name"] for t in json.loads(listed.stdout)["tools"]} == ALL_TOOLS - {"forget"}
    called = _inspector(
        [*base, "--method", "tools/call", "--tool-name", "recall", "--tool-arg", "query=dentist"]
    )
    assert called.returncode == 0, called.stderr[-2000:]
    result = json.loads(called.stdout)
    assert not result.get("isError")
    hits = result["structuredContent"]["hits"]
    assert hits[0]["text"] == "Dentist appointment moved to Thursday"
    assert hits[0]["provenance"]["actor"] == "cli"


def test_bench_mcp_recall(vault_path: Path, pwfile: Path) -> None:
    from memctl.mcp.bench import bench_mcp_recall

    seed(vault_path)
    out = bench_mcp_recall(
        vault_path, {"MEMCTL_PASSPHRASE_FILE": str(pwfile)}, ["dentist", "planning room"]
    )
    assert out["mcp_recall_n"] >= 200 and out["mcp_recall_errors"] == 0
    assert 0 < out["mcp_recall_p50_ms"] <= out["mcp_recall_p95_ms"]
