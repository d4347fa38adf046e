"""The agent: socket privacy, peer checks, timeouts, lock, fallbacks, same results as local.

Most tests run the agent's server in a thread of this process (fast); the ones about the real
detached process (`memctl unlock`, SIGKILL, /proc) start it for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import memctl
from memctl.agent import client as client_mod
from memctl.agent import peer, protocol
from memctl.agent.client import AgentClient, VaultProxy, remove_stale, running_agents
from memctl.agent.config import format_duration, parse_duration
from memctl.agent.paths import agent_paths, ensure_private_dir, private_dir_ok, resolve_vault
from memctl.agent.server import AgentServer, claim
from memctl.cli import app
from memctl.errors import ExitCode, MemctlError, RecordNotFound, UsageError, VaultLocked

from .conftest import FAST_KDF, PASSPHRASE

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
NOTES = [
    {"text": "Plant the tulip bulbs in October", "tags": ["garden"]},
    {"text": "Renew the passport before the Lisbon trip", "tags": ["travel"]},
    {"text": "The dentist moved to Thursday at 3pm", "namespace": "health"},
    {"text": "Tulip festival in Keukenhof opens in March", "tags": ["travel", "garden"]},
]


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


@dataclass
class Served:
    server: AgentServer
    thread: threading.Thread
    vault: Any
    master: bytes

    def stop(self) -> None:
        self.server.stop("test over")
        self.thread.join(10)


@contextlib.contextmanager
def serve(vault_path: Path, *, ttl: float | None = None, idle: float | None = None):
    """The agent's server for ``vault_path`` in a thread of this process."""
    v = memctl.open_vault(vault_path, passphrase=PASSPHRASE, actor="cli")
    paths = agent_paths(resolve_vault(vault_path))
    lock_fd = claim(paths)
    server = AgentServer(v, paths, ttl=ttl, idle=idle)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served = Served(server, thread, v, v.keys.master)
    try:
        yield served
    finally:
        served.stop()
        os.close(lock_fd)


@pytest.fixture
def cli_vault(vault_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A vault with a few notes, MEMCTL_VAULT pointing at it, and no credentials in the env."""
    monkeypatch.setenv("MEMCTL_VAULT", str(vault_path))
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        v.ingest_many(NOTES)
    return vault_path


@pytest.fixture(autouse=True)
def _no_agent_left_behind() -> Iterator[None]:
    yield
    for client in running_agents():  # this test's runtime dir only (conftest isolates it)
        with contextlib.suppress(MemctlError, OSError):
            client.lock()


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


# -- small pieces -----------------------------------------------------------------------------
def test_peer_allowed_only_same_uid() -> None:
    me = os.getuid()
    assert peer.peer_allowed(me, me)
    assert not peer.peer_allowed(me + 1, me)
    assert not peer.peer_allowed(0, 1000)  # not even root, when we are not root
    assert not peer.peer_allowed(-1, me)
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        pid, uid, _ = peer.peer_cred(a)
        assert (pid, uid) == (os.getpid(), me)


def test_server_refuses_other_uid(cli_vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a connection from another user: the agent closes it without answering."""
    monkeypatch.setattr(peer, "peer_uid", lambda sock: os.getuid() + 1)
    with serve(cli_vault) as served:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(served.server.paths.socket))
        sock.settimeout(5)
        try:
            protocol.send_frame(sock, {"v": 1, "op": "ping"})
            reply = protocol.recv_frame(sock)
        except (ConnectionResetError, BrokenPipeError):
            reply = None
        assert reply is None  # closed without a word
        sock.close()
        assert AgentClient.connect(cli_vault) is None  # (the client checks the agent's uid too)


def test_durations() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2h") == 7200
    assert parse_duration("0") == 0
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "none"
    for bad in ("", "soon", "5x", "-1", "1h soon", "400d"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_default_vault_path_matches_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from memctl.agent.paths import default_vault_path
    from memctl.vault import core

    assert default_vault_path() == core.default_vault_path()
    monkeypatch.delenv("MEMCTL_VAULT")
    assert default_vault_path() == core.default_vault_path()


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, "x"]},
        {"$dc": "not a dataclass", "f": {}},  # plain dicts using reserved keys survive
        {"$bytes": "AAAA"},
        {"nested": {"$dict": {"x": 1}}},
        b"\x00\xffbytes",
    ],
)
def test_encode_decode_round_trip(value: Any) -> None:
    wire = json.loads(json.dumps(protocol.encode(value)))
    assert protocol.decode(wire) == value


def test_dataclass_and_errors_travel() -> None:
    from memctl.vault.core import IngestSummary

    s = IngestSummary(added=2, ids=["A", "B"], errors=["item 1: bad"])
    back = protocol.decode(json.loads(json.dumps(protocol.encode(s))))
    assert isinstance(back, IngestSummary) and back == s
    with pytest.raises(TypeError):
        protocol.encode({"x": object()})
    with pytest.raises(RecordNotFound) as info:
        protocol.raise_remote(protocol.error_payload(RecordNotFound("no record", hint="h")))
    assert (info.value.message, info.value.hint, info.value.exit_code) == (
        "no record",
        "h",
        ExitCode.NOT_FOUND,
    )
    with pytest.raises(MemctlError) as info2:
        protocol.raise_remote({"type": "SomethingNew", "message": "m", "exit_code": 12})
    assert info2.value.exit_code == ExitCode.REFUSED


# -- the socket -------------------------------------------------------------------------------
def test_socket_dir_0700_socket_0600(cli_vault: Path) -> None:
    with serve(cli_vault) as served:
        paths = served.server.paths
        assert paths.directory == Path(os.environ["XDG_RUNTIME_DIR"]) / "memctl"
        assert stat.S_IMODE(os.lstat(paths.directory).st_mode) == 0o700
        st = os.lstat(paths.socket)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(paths.lock).st_mode) == 0o600
        # a second agent for the same vault is refused while this one lives
        with pytest.raises(protocol.AgentRunning):
            claim(paths)


def test_unsafe_runtime_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    assert not private_dir_ok(loose)
    ensure_private_dir(loose)  # ours: tightened
    assert stat.S_IMODE(os.lstat(loose).st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(loose)
    with pytest.raises(protocol.AgentError):
        ensure_private_dir(link)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    paths = agent_paths(tmp_path / "v")
    assert paths.directory == tmp_path / f"memctl-{os.getuid()}"


def test_long_socket_paths_work(cli_vault: Path, tmp_path: Path, monkeypatch) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    with serve(cli_vault) as served:
        assert len(str(served.server.paths.socket)) > 108
        client = AgentClient.connect(cli_vault)
        assert client is not None
        assert client.call("get", served.vault.list(limit=1)[0]["id"])["text"]
        client.close()


# -- same results with and without the agent --------------------------------------------------
def test_recall_through_agent_equals_local(cli_vault: Path, pwfile: Path, monkeypatch) -> None:
    commands = [
        ("recall", "tulip", "--json"),
        ("recall", "tulip OR passport", "--jsonl", "--tag", "travel"),
        ("recall", "dentist", "-n", "health", "--json", "--explain"),
        ("list", "--json"),
        ("list", "--limit", "2"),
        ("recall", "tulip"),
    ]
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    local = [run(*c) for c in commands]
    rid = json.loads(local[0].stdout)[0]["id"]
    local.append(run("get", rid, "--json", "--versions"))
    monkeypatch.delenv("MEMCTL_PASSPHRASE_FILE")  # from here only the agent can unlock
    assert run("recall", "tulip").exit_code == ExitCode.LOCKED
    with serve(cli_vault):
        remote = [run(*c) for c in commands] + [run("get", rid, "--json", "--versions")]
    for want, got in zip(local, remote, strict=True):
        assert got.exit_code == want.exit_code == 0
        assert got.stdout == want.stdout
    assert len(json.loads(remote[0].stdout)) == 2


def test_errors_and_exit_codes_through_agent(cli_vault: Path) -> None:
    with serve(cli_vault):
        r = run("get", "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
        assert r.exit_code == ExitCode.NOT_FOUND and "no record" in r.stderr
        assert run("recall", "x", "--limit", "0").exit_code == ExitCode.USAGE
        assert run("recall", "x", "--mode", "psychic").exit_code == ExitCode.USAGE
        r = run("ingest", "--text", "x", "--namespace", "has space")
        assert r.exit_code == ExitCode.PARTIAL and "namespace" in r.stderr


def test_ingest_through_agent(cli_vault: Path, tmp_path: Path, monkeypatch) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Bees\n\nThe hive needs checking in spring.\n")
    with serve(cli_vault) as served:
        r = run("ingest", str(notes), "--tag", "farm", "--json")  # no credentials: the agent
        assert r.exit_code == 0, r.output
        summary = json.loads(r.stdout)
        assert (summary["added"], summary["failed"]) == (1, 0)
        again = json.loads(run("ingest", str(notes / "a.md"), "--json").stdout)
        assert (again["added"], again["skipped"]) == (0, 1)
        hit = json.loads(run("recall", "hive", "--json").stdout)[0]
        assert hit["tags"] == ["farm"] and hit["actor"] == "cli"
        # big ingests go in chunks; per-item errors keep their index in the whole input
        monkeypatch.setattr(client_mod, "INGEST_CHUNK", 3)
        items: list[Any] = [{"text": f"chunked note {i}"} for i in range(7)]
        items[5] = {"text": "bad", "namespace": "has space"}
        seen: list[int] = []
        proxy = VaultProxy(AgentClient.connect(cli_vault), actor="cli", open_local=_no_local)
        with proxy:
            got = proxy.ingest_many(items, progress=seen.append)
        from memctl.vault.core import IngestSummary

        assert isinstance(got, IngestSummary)
        assert (got.added, got.failed, seen) == (6, 1, [3, 3, 1])
        assert got.errors[0].startswith("item 5:")
        assert served.vault.status()["records"] == len(NOTES) + 1 + 6


def test_dispatch_rules(cli_vault: Path) -> None:
    with serve(cli_vault):
        client = AgentClient.connect(cli_vault)
        assert client is not None
        rid = client.call("ingest", "from a cron job", actor="cron:nightly")
        assert client.call("get", rid)["actor"] == "cron:nightly"
        with pytest.raises(UsageError, match="actor"):
            client.call("list", actor="bad actor\n")
        for secret_op in ("record_key", "change_passphrase", "close", "conn", "__class__"):
            with pytest.raises(protocol.AgentUnsupported):
                client.call(secret_op, rid)
        with pytest.raises(UsageError, match="get"):
            client.call("get", rid, no_such_option=True)
        with pytest.raises(RecordNotFound):
            client.call("get", "01ZZZZZZZZZZZZZZZZZZZZZZZZ")
        assert client.call("list", limit=1)  # the connection survives errors
        client.close()


def _no_local() -> Any:
    raise AssertionError("should have gone through the agent")


def test_status_reports_the_agent(cli_vault: Path, pwfile: Path) -> None:
    r = run("status", "--json", "--passphrase-file", str(pwfile))
    assert json.loads(r.stdout)["agent"] == {
        "running": False,
        "expires_at": None,
        "idle_timeout": None,
    }
    with serve(cli_vault, ttl=3600, idle=900):
        info = json.loads(run("status", "--json").stdout)
        assert info["records"] == len(NOTES)
        agent = info["agent"]
        assert agent["running"] and agent["pid"] == os.getpid()
        assert agent["idle_timeout"] == 900 and agent["expires_at"].endswith("Z")
        assert "running (pid" in run("status").stdout


def test_operations_the_agent_does_not_serve_go_local(cli_vault: Path, pwfile: Path) -> None:
    from memctl.cli import common

    with serve(cli_vault):
        with common.open_vault() as v:
            assert isinstance(v, VaultProxy)
            assert [s["type"] for s in v.list_keyslots()] == ["passphrase"]  # via the agent
            with pytest.raises(VaultLocked):  # passwd must prove the real secret
                v.change_passphrase(b"new")
        with common.open_vault(passphrase_file=pwfile) as v:
            assert (
                v.header.vault_id.hex()
                == json.loads((cli_vault / "header.json").read_text())["vault_id"]
            )  # an attribute: served by a local unlock
            assert not v.via_agent
        with common.open_vault(use_agent=False, passphrase_file=pwfile) as v:
            assert not isinstance(v, VaultProxy)


def test_agent_for_another_vault_is_not_used(
    cli_vault: Path, tmp_path: Path, pwfile: Path, monkeypatch
) -> None:
    other = tmp_path / "other"
    memctl.init_vault(other, passphrase=PASSPHRASE, **FAST_KDF)
    with serve(other) as served:
        monkeypatch.setenv("MEMCTL_AGENT_SOCKET", str(served.server.paths.socket))
        assert AgentClient.connect(other) is not None
        assert AgentClient.connect(cli_vault) is None
        hits = json.loads(run("recall", "tulip", "--json", "--passphrase-file", str(pwfile)).stdout)
        assert len(hits) == 2  # cli_vault's notes, unlocked locally; not the empty `other`


# -- timeouts, lock, death --------------------------------------------------------------------
def test_ttl_expiry_wipes_keys_and_removes_socket(cli_vault: Path) -> None:
    with serve(cli_vault, ttl=1.0) as served:
        master = served.master
        sock = served.server.paths.socket
        assert master != bytes(32) and os.path.exists(sock)
        served.thread.join(10)
        assert not served.thread.is_alive()
        assert "time-to-live" in (served.server.stop_reason or "")
        assert not os.path.exists(sock)
        assert served.vault.conn is None and served.vault.keys is None
        assert served.vault._dedup_key is None and served.vault._dek_wrap_key is None
        assert master == bytes(32)  # overwritten in place
        assert AgentClient.connect(cli_vault) is None


def test_idle_timeout_counts_vault_operations_not_pings(cli_vault: Path, monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(peer, "clock", lambda: now[0])  # the agent's (suspend-aware) clock

    def tick(seconds: float, served: Served) -> None:
        now[0] += seconds
        os.write(served.server._wake_w, b"x")  # let the main loop look at the clock now
        time.sleep(0.1)

    with serve(cli_vault, idle=60) as served:
        client = AgentClient.connect(cli_vault)
        assert client is not None
        tick(50, served)
        client.call("list", limit=1)  # use at t+50
        tick(50, served)
        assert served.thread.is_alive()  # 50 s idle < 60 s
        client.ping()  # a ping is not use
        tick(11, served)
        served.thread.join(10)
        assert not served.thread.is_alive()
        assert "idle" in (served.server.stop_reason or "")
        assert not os.path.exists(served.server.paths.socket)
        client.close()


def test_agent_gone_mid_command(cli_vault: Path, pwfile: Path) -> None:
    """A request the agent never answered: repeatable ones go local, others report it."""
    stop = threading.Event()
    paths = agent_paths(resolve_vault(cli_vault))
    ensure_private_dir(paths.directory)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(paths.socket))
    listener.listen()
    vault_id = json.loads((cli_vault / "header.json").read_text())["vault_id"]

    def fake_agent() -> None:  # answers ping, then dies on the next request
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while (req := protocol.recv_frame(conn)) is not None:
                    if req["op"] != "ping":
                        break
                    info = {"protocol": 1, "vault": str(resolve_vault(cli_vault))}
                    protocol.send_frame(
                        conn, {"ok": True, "result": {**info, "vault_id": vault_id}}
                    )

    threading.Thread(target=fake_agent, daemon=True).start()

    def local() -> Any:
        return memctl.open_vault(cli_vault, passphrase_file=pwfile)

    def locked() -> Any:
        raise VaultLocked("the vault is locked and no unlock method was given")

    try:
        with VaultProxy(AgentClient.connect(cli_vault), actor="cli", open_local=local) as v:
            assert len(v.recall("tulip")) == 2  # redone locally
            assert not v.via_agent
        erase_proxy = VaultProxy(AgentClient.connect(cli_vault), actor="cli", open_local=local)
        with erase_proxy as v, pytest.raises(protocol.AgentError, match="may or may not"):
            v.erase(["01ZZZZZZZZZZZZZZZZZZZZZZZZ"])
        with VaultProxy(AgentClient.connect(cli_vault), actor="cli", open_local=locked) as v:
            with pytest.raises(VaultLocked, match="agent went away") as info:
                v.recall("tulip")
            assert "memctl unlock" in (info.value.hint or "")
    finally:
        stop.set()
        listener.close()


def test_stale_socket_is_removed_unless_an_agent_holds_the_lock(cli_vault: Path) -> None:
    paths = agent_paths(resolve_vault(cli_vault))
    ensure_private_dir(paths.directory)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(paths.socket))
    dead.close()  # a socket file with nobody listening: what SIGKILL leaves behind
    holder = claim(paths)  # ... but here a live agent (starting up) holds the lock
    assert AgentClient.connect(cli_vault) is None
    assert os.path.lexists(paths.socket)
    os.close(holder)
    assert AgentClient.connect(cli_vault) is None
    assert not os.path.lexists(paths.socket)
    assert not remove_stale(paths)


def test_lock_without_agent(cli_vault: Path) -> None:
    r = run("lock")
    assert r.exit_code == 0 and "no agent" in r.stderr
    assert json.loads(run("lock", "--all", "--json").stdout) == {"locked": []}


# -- the real detached agent ------------------------------------------------------------------
def test_unlock_reuse_lock_and_no_secret_in_proc(cli_vault: Path, pwfile: Path) -> None:
    with memctl.open_vault(cli_vault, passphrase=PASSPHRASE) as v:
        master = v.keys.master
    r = run("unlock", "--passphrase-file", str(pwfile), "--ttl", "10m", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    pid = info["pid"]
    assert info["reused"] is False and pid != os.getpid()
    assert info["idle_timeout"] == 900 and info["expires_at"]
    try:
        # the key never went through argv or env
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"memctl.agent" in cmdline
        secrets = (PASSPHRASE.encode(), master, master.hex().encode(), str(pwfile).encode())
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except PermissionError:  # non-dumpable: other processes of ours cannot read it
            environ = b""
        for secret in secrets:
            assert secret not in cmdline and secret not in environ
        assert b"MEMCTL_PASSPHRASE_FILE" not in environ
        # commands use it without any credentials
        hits = json.loads(run("recall", "tulip", "--json").stdout)
        assert len(hits) == 2
        # a second unlock reuses it without asking for anything
        again = json.loads(run("unlock", "--json").stdout)
        assert again["reused"] is True and again["pid"] == pid
        r = run("lock", "--json")
        assert r.exit_code == 0
        assert json.loads(r.stdout)["locked"] == [
            {"vault": str(cli_vault), "pid": pid, "done": True}
        ]
        assert wait_until(lambda: process_gone(pid))
        assert not os.path.lexists(info["socket"])
        assert run("recall", "tulip").exit_code == ExitCode.LOCKED
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def test_killed_agent_falls_back_and_stale_socket_goes(cli_vault: Path, pwfile: Path) -> None:
    r = run("unlock", "--passphrase-file", str(pwfile), "--json", "--ttl", "1m")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    os.kill(info["pid"], signal.SIGKILL)
    assert wait_until(lambda: process_gone(info["pid"]))
    assert os.path.lexists(info["socket"])  # SIGKILL leaves the socket file behind
    r = run("recall", "tulip", "--json", "--passphrase-file", str(pwfile))
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 2
    assert not os.path.lexists(info["socket"])
    r = run("recall", "tulip")
    assert r.exit_code == ExitCode.LOCKED


def test_detached_agent_ttl_expiry(cli_vault: Path, pwfile: Path) -> None:
    r = run("unlock", "--passphrase-file", str(pwfile), "--ttl", "1s", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert wait_until(lambda: process_gone(info["pid"]))
    assert not os.path.lexists(info["socket"])
    log = Path(info["socket"]).with_suffix(".log").read_text()
    assert "time-to-live" in log and "keys wiped" in log
    assert PASSPHRASE not in log


def test_foreground_agent(cli_vault: Path, pwfile: Path) -> None:
    cmd = [sys.executable, "-c", "from memctl.cli import main; main()", "agent", "--verbose"]
    proc = subprocess.Popen(
        [*cmd, "--passphrase-file", str(pwfile), "--idle", "1m"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert wait_until(lambda: AgentClient.connect(cli_vault) is not None)
        assert run("unlock", "--json").exit_code == 0  # reused: no passphrase needed
        assert len(json.loads(run("recall", "tulip", "--json").stdout)) == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "serving" in err and "received SIGTERM; keys wiped" in err
    assert "recall" in err  # --verbose logs operation names (never arguments)
    assert "tulip" not in err and PASSPHRASE not in err


def test_unlock_with_wrong_passphrase_starts_nothing(cli_vault: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    r = run("unlock", "--passphrase-file", str(bad))
    assert r.exit_code == ExitCode.BAD_PASSPHRASE
    assert running_agents() == []


PROBE = """
import json, sys
sys.argv = ["memctl", "recall", "tulip", "--json"]
from memctl.cli import main
try:
    main()
except SystemExit:
    pass
heavy = ("sqlcipher3", "cryptography", "numpy", "torch", "sentence_transformers",
         "memctl.vault.core", "memctl.agent.server", "ctypes")
print(json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr)
"""


def test_client_path_imports_nothing_heavy(cli_vault: Path) -> None:
    with serve(cli_vault):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True
        )
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    assert len(json.loads(proc.stdout)) == 2
