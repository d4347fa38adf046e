"""Security properties: private files, no secret anywhere it could leak, other users refused,
the MCP policy under every tool, and erasure that leaves no copy behind.

Covered elsewhere and referenced rather than repeated:
- the agent's peer check with a simulated other uid, its socket 0600 in a 0700 directory, and
  no secret in its ``/proc/<pid>/cmdline`` / ``environ``: tests/test_agent.py
  (test_server_refuses_other_uid, test_socket_dir_0700_socket_0600,
  test_unlock_reuse_lock_and_no_secret_in_proc);
- the MCP policy under every tool (namespaces, read-only, no erase, refusals before unlocking):
  tests/test_mcp.py (test_policy_holds_under_every_tool, test_refusals_come_before_unlocking,
  test_read_only_server_refuses_writes_and_explains_locking, ...);
- no plaintext anywhere on disk and files private after writes: tests/test_vault.py.

Added here: permissions after every kind of write under a permissive umask; a sweep of ~40 CLI
runs (successes and failures) whose output never holds a secret; a traceback forced inside the
unlock path holding no secret; the MCP server's and passphrase command's process table; the
agent refusing a *real* other uid (kernel-reported, via SO_PEERCRED); the MCP namespace policy
in vector and hybrid recall; and an erasure leak through neighbours' context (xfail: a bug).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import signal
import socket
import stat
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import memctl
from memctl.cli import app

from .conftest import PASSPHRASE
from .consistency import MEMCTL, assert_clean_stderr, child_env
from .oracle import scan

runner = CliRunner()


def vault_secrets(path: Path, *passphrases: str) -> dict[str, bytes]:
    with memctl.open_vault(path, passphrase=passphrases[0]) as v:
        master, sqlkey = v.keys.master, v.keys.sqlcipher
    out = {f"passphrase {i}": p.encode() for i, p in enumerate(passphrases)}
    out |= {
        "master key hex": master.hex().encode(),
        "master key HEX": master.hex().upper().encode(),
        "master key b64": base64.b64encode(master).rstrip(b"="),
        "sqlcipher key hex": sqlkey.hex().encode(),
    }
    return out


def assert_no_secret(blob: bytes | str, secrets: dict[str, bytes], where: str) -> None:
    data = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
    for name, secret in secrets.items():
        assert secret not in data, f"{name} found in {where}"


# -- permissions ---------------------------------------------------------------------------
@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_every_file_private_after_every_kind_of_write(tmp_path: Path, pwfile: Path) -> None:
    """Under the usual umask 022: files 0600 (journal objects 0400: git keeps them read-only),
    directories 0700 — after ingest, update, erase, passwd, key add/remove, inbox, backup,
    audit repair, a crash's leftovers."""
    path = tmp_path / "vault"
    with umask(0o022):
        memctl.init_vault(
            path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
        )
        with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
            rid = v.ingest("a note zqperm", source="file:///x", locator="a")
            v.ingest("a note changed zqperm2", source="file:///x", locator="a")
            v.ingest_many([f"bulk {i}" for i in range(40)])  # a packed journal commit
            v.erase([rid])
            v.change_passphrase(b"another passphrase")
            slot = v.add_key_file(tmp_path / "key")
            v.remove_keyslot(slot)
            v.audit_repair()
            v.backup(tmp_path / "backup")
        from memctl.ingest import inbox

        inbox.seal_items(path, [{"text": "sealed"}], actor="inbox")
        env = child_env(path, None, MEMCTL_KEY_FILE="")
        r = subprocess.run(
            [str(MEMCTL), "inbox", "add", "--text", "sealed by the cli"],
            env={k: v for k, v in env.items() if v},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr
    bad = []
    for root in (path, tmp_path / "backup"):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.lstat().st_mode)
            ok = mode == 0o700 if p.is_dir() else (mode & 0o077 == 0 and mode & 0o400)
            if not ok:
                bad.append(f"{oct(mode)} {p.relative_to(tmp_path)}")
    assert bad == [], bad[:20]
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600


# -- no secret in what the CLI prints, successes and failures alike ------------------------
@pytest.fixture
def cli_vault(tmp_path: Path, pwfile: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "clivault"
    monkeypatch.setenv("MEMCTL_VAULT", str(path))
    monkeypatch.setenv("MEMCTL_PASSPHRASE_FILE", str(pwfile))
    monkeypatch.setenv("MEMCTL_NO_AGENT", "1")
    r = runner.invoke(
        app, ["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1", "--model", "hashing-64"]
    )
    assert r.exit_code == 0, r.output
    return path


def test_no_secret_in_the_output_of_many_cli_runs(
    cli_vault: Path, tmp_path: Path, pwfile: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Garden\n\nPlant the tulip bulbs in October.\n")
    (notes / "bad.json").write_text("{not json")
    new_pw = tmp_path / "newpw"
    new_pw.write_text("a brand new passphrase for passwd\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    secrets = vault_secrets(cli_vault, PASSPHRASE)
    secrets["new passphrase"] = b"a brand new passphrase for passwd"
    key = tmp_path / "cron.key"

    runs: list[tuple[list[str], set[int]]] = [
        (["ingest", "--text", "Dentist moved to Thursday", "--tag", "health"], {0}),
        (["ingest", str(notes), "--json"], {0, 9}),
        (["recall", "dentist", "--json", "--explain"], {0}),
        (["recall", "dentist", "--since", "the day before never"], {2}),
        (["recall", "tulip", "--mode", "vector"], {0}),
        (["list", "--json"], {0}),
        (["get", "0" * 26], {8}),
        (["status", "--json"], {0}),
        (["export"], {0}),
        (["export", "--erased"], {0}),
        (["audit", "log", "--json"], {0}),
        (["audit", "verify", "--json"], {0}),
        (["audit", "repair", "--json"], {0}),
        (["key", "add", "--key-file", str(key), "--json"], {0}),
        (["key", "list", "--json"], {0}),
        (["--key-file", str(key), "list"], {0}),
        (["erase", "--query", "dentist"], {12}),
        (["erase", "--query", "dentist", "--yes", "--json"], {0}),
        (["inbox", "add", "--text", "sealed note"], {0}),
        (["inbox", "list", "--json"], {0}),
        (["backup", str(tmp_path / "bk"), "--json"], {0}),
        (["--passphrase-file", str(wrong), "list"], {4}),
        (["--passphrase-command", f"cat {wrong}", "list", "--no-env"], {4}),
        (["--passphrase-command", "false", "list", "--no-env"], {4, 5}),
        (["--passphrase-command", f"cat {pwfile}", "list", "--no-env"], {0}),
        (["--passphrase-file", str(tmp_path / "missing"), "list"], {2, 4, 5}),
        (["recall"], {2}),
        (["ingest", str(tmp_path / "nowhere")], {2}),
        (["passwd", "--new-passphrase-file", str(new_pw)], {0}),
        (["--passphrase-file", str(new_pw), "status"], {0}),
        (["--passphrase-file", str(pwfile), "status"], {4}),
        (["--vault", str(tmp_path / "none"), "list"], {3}),
    ]
    seen = 0
    for args, codes in runs:
        env = {}
        if args[-1] == "--no-env":  # the env's passphrase file would win over the command
            args, env = args[:-1], {"MEMCTL_PASSPHRASE_FILE": None}
        r = runner.invoke(app, args, env=env)
        out = (r.stdout or "") + (r.stderr or "")
        assert r.exit_code in codes, (args, r.exit_code, out[-800:])
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
        assert_no_secret(out, secrets, f"output of memctl {' '.join(args)}")
        assert_clean_stderr(r.stderr or "", f"memctl {' '.join(args)}")
        seen += 1
    key_secret = key.read_text().strip().split(":", 1)[1].encode()
    assert_no_secret(key_secret, {}, "")  # (the key file is the one place it lives)
    for path in (cli_vault, tmp_path / "bk"):
        for p in path.rglob("*"):
            if p.is_file():
                raw = p.read_bytes()
                assert_no_secret(raw, secrets | {"key file": key_secret}, str(p))
                with contextlib.suppress(zlib.error):  # loose git objects: look inside too
                    assert_no_secret(zlib.decompress(raw), secrets, f"{p} (inflated)")
    assert seen == len(runs)


def test_a_traceback_inside_unlock_holds_no_secret(tmp_path: Path, vault_path: Path) -> None:
    """Force an unexpected exception deep in the unlock path of a real process: the traceback
    (there must be one: it is a bug) shows code, never the passphrase or keys."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import memctl.crypto.kdf as k\n"
        "real = k.derive\n"
        "def derive(secret, params):\n"
        "    key = real(secret, params)\n"
        "    raise RuntimeError('injected failure')\n"
        "k.derive = derive\n"
    )
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    env = child_env(vault_path, pw)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
    r = subprocess.run(
        [str(MEMCTL), "list"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 1 and "injected failure" in r.stderr  # the hook ran
    assert_no_secret(r.stdout + r.stderr, vault_secrets(vault_path, PASSPHRASE), "traceback")


# -- the process table: MCP server, passphrase command ---------------------------------------
def proc_view(pid: int) -> bytes:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:
        environ = b""
    return cmdline + b"\n" + environ


def test_mcp_server_and_passphrase_command_hold_no_secret(vault_path: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    secrets = vault_secrets(vault_path, PASSPHRASE)
    env = child_env(vault_path, pw)
    proc = subprocess.Popen(
        [str(MEMCTL), "mcp", "--vault", str(vault_path)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "sec", "version": "0"},
            },
        }
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "remember", "arguments": {"text": "unlocks the vault"}},
        }
        assert proc.stdin is not None and proc.stdout is not None
        for msg in (init, {"jsonrpc": "2.0", "method": "notifications/initialized"}, call):
            proc.stdin.write(json.dumps(msg).encode() + b"\n")
            proc.stdin.flush()
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert b'"id":2' in lines[1].replace(b" ", b""), lines  # the vault is unlocked now
        assert_no_secret(proc_view(proc.pid), secrets, "the MCP server's /proc entries")
        assert b"MEMCTL_PASSPHRASE_FILE" in proc_view(proc.pid)  # (a path, not the secret)
    finally:
        proc.kill()
        _out, err = proc.communicate(timeout=30)
    assert_no_secret(err, secrets, "the MCP server's stderr")

    # A --passphrase-command child sees no secret in its own environment or argv.
    probe = tmp_path / "probe.sh"
    dump = tmp_path / "dump"
    probe.write_text(f"#!/bin/sh\ncat /proc/$$/environ > {dump}\ncat {pw}\n")
    probe.chmod(0o700)
    env.pop("MEMCTL_PASSPHRASE_FILE")
    r = subprocess.run(
        [str(MEMCTL), "--passphrase-command", str(probe), "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert_no_secret(dump.read_bytes(), secrets, "the passphrase command's environment")


# -- the agent refuses a real other uid -------------------------------------------------------
def _connect_as(uid: int, sock_path: str) -> bytes | None:
    """Fork; in the child take effective uid ``uid`` (the kernel reports it to the agent through
    SO_PEERCRED) while keeping filesystem uid 0 so the 0700 socket directory stays reachable;
    send a ping; report what came back (None: refused, closed without a word)."""
    from memctl.agent import protocol

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            if uid != os.geteuid():
                os.setresuid(0, uid, 0)
                ctypes.CDLL(None, use_errno=True).setfsuid(0)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(sock_path)
            try:
                protocol.send_frame(s, {"v": 1, "op": "ping"})
                reply = protocol.recv_frame(s)
                if reply is not None:
                    os.write(write_fd, json.dumps(reply, default=str).encode())
            except (ConnectionError, OSError, EOFError, protocol.ProtocolError):
                pass
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return data or None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_agent_refuses_a_real_other_uid(vault_path: Path, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    env = child_env(vault_path, None)
    env.pop("MEMCTL_NO_AGENT")
    r = subprocess.run(
        [str(MEMCTL), "unlock", "--passphrase-file", str(pw), "--ttl", "2m", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    try:
        assert _connect_as(os.geteuid(), info["socket"]) is not None  # control: we are served
        assert _connect_as(65534, info["socket"]) is None  # nobody: closed without a word
        assert _connect_as(os.geteuid(), info["socket"]) is not None  # and it still serves
        log = Path(info["socket"]).with_suffix(".log")
        if log.exists():
            assert_no_secret(log.read_bytes(), vault_secrets(vault_path, PASSPHRASE), "agent log")
    finally:
        subprocess.run([str(MEMCTL), "lock"], env=env, capture_output=True, timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGTERM)
        time.sleep(0.1)


# -- the MCP namespace policy in vector and hybrid recall --------------------------------------
def test_mcp_namespace_policy_holds_in_every_recall_mode(tmp_path: Path, pwfile: Path) -> None:
    from memctl.mcp.policy import Policy, PolicySet
    from memctl.mcp.tools import Toolbox, VaultSession, credentials_factory

    path = tmp_path / "vault"
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        secret = v.ingest(
            "my private diagnosis is zqprivate", namespace="personal", source="file:///d.md"
        )
        v.ingest("the work plan for monday zqwork", namespace="work", source="file:///d.md")
    box = Toolbox(
        VaultSession(path, credentials_factory(passphrase_file=pwfile)),
        PolicySet(Policy(("work",))),
    )
    try:
        for mode in ("keyword", "vector", "hybrid"):
            for query in ("my private diagnosis is zqprivate", "zqprivate", "monday"):
                out = box.call("recall", {"query": query, "mode": mode, "limit": 50}, "c")
                blob = json.dumps(out)
                assert secret not in blob and "zqprivate" not in blob, (mode, query)
        listed = json.dumps(box.call("list_memories", {"limit": 100}, "c"))
        assert "zqprivate" not in listed
    finally:
        box.session.close()


# -- erasure leaves no copy in other records ---------------------------------------------------
def test_erased_text_leaves_no_copy_in_a_neighbours_context(tmp_path: Path) -> None:
    path = tmp_path / "vault"
    memctl.init_vault(
        path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model="hashing-64"
    )
    with memctl.open_vault(path, passphrase=PASSPHRASE) as v:
        gone = v.ingest("my secret zqerased", source="chat://export", locator="turn1")
        kept = v.ingest("the next turn zqkept", source="chat://export", locator="turn2")
        assert v.erase([gone])["physical"] == "complete"
        exported = json.dumps(list(v.export()))
        assert "zqerased" not in exported and "zqerased" not in json.dumps(v.get(kept))
        report = scan(path, v.keys.sqlcipher, ["zqerased"])
        assert report.hits == [], report.hits
