"""Watch mode with real file events: debounce, editors' temp-file dances, bad files, stopping."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import memctl
from memctl.ingest.pipeline import IngestConfig, Ingestor
from memctl.ingest.watch import Debouncer, ignored, watch_ingest

from .conftest import PASSPHRASE

ROOT = Path(__file__).resolve().parent.parent
DEBOUNCE = 0.3


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


class Watcher:
    """watch_ingest in a thread that owns its own unlocked vault."""

    def __init__(self, vault_path: Path, roots: list[Path], **config: Any) -> None:
        self.batches: list[Any] = []
        self.errors: list[Any] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.result: Any = None
        self.thread = threading.Thread(
            target=self._run, args=(vault_path, roots, IngestConfig(**config)), daemon=True
        )

    def _run(self, vault_path: Path, roots: list[Path], config: IngestConfig) -> None:
        with memctl.open_vault(vault_path, passphrase=PASSPHRASE, actor="cli") as v:
            self.result = watch_ingest(
                Ingestor(v, config),
                roots,
                debounce=DEBOUNCE,
                stop=self.stop,
                ready=self.ready,
                on_batch=self.batches.append,
                on_error=self.errors.append,
            )

    def __enter__(self) -> Watcher:
        self.thread.start()
        assert self.ready.wait(15)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()

    def total(self, field: str) -> int:
        return sum(getattr(b, field) for b in self.batches)

    def settle(self) -> None:
        """Wait until no batch has arrived for a few debounce periods."""
        count = -1
        while count != len(self.batches):
            count = len(self.batches)
            time.sleep(DEBOUNCE * 4)


def texts(vault_path: Path) -> dict[str, dict[str, Any]]:
    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        return {r["text"]: r for r in v.list(limit=100)}


def test_debouncer_hands_out_quiet_paths_once() -> None:
    d = Debouncer(1.0)
    d.touch("/a", when=0.0)
    d.touch("/a", when=0.8)
    d.touch("/b", is_dir=True, when=0.5)
    assert d.due(now=1.6) == [("/b", True)]
    assert d.due(now=1.7) == []
    assert d.due(now=1.8) == [("/a", False)]
    assert d.pending() == 0


def test_ignored_names_match_the_folder_walk(tmp_path: Path) -> None:
    for name in (".a.md.swp", "a.md~", "#a.md#", ".#a.md", "x.tmp", ".git/config", "b/.h/c.md"):
        assert ignored(tmp_path / name, tmp_path), name
    for name in ("a.md", "sub/b.md", "4913"):
        assert not ignored(tmp_path / name, tmp_path), name
    assert ignored(Path("/elsewhere/a.md"), tmp_path)


def test_watch_follows_real_file_events(vault_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text("# A\n\nfirst version of a\n")
    with Watcher(vault_path, [root], prune=True) as w:
        wait_for(lambda: w.total("added") == 1)  # the initial pass

        (root / "b.md").write_text("# B\n\nbee note\n")
        wait_for(lambda: w.total("added") == 2)

        # vim: swap file, rename the original to a backup, write anew, delete the backup
        (root / ".a.md.swp").write_bytes(b"b0VIM swap")
        os.rename(root / "a.md", root / "a.md~")
        (root / "a.md").write_text("# A\n\nsecond version of a\n")
        (root / "a.md~").unlink()
        (root / ".a.md.swp").unlink()
        wait_for(lambda: w.total("updated") == 1)

        # write a temp file, rename it over the target (many editors and tools)
        (root / "tmp4913").write_text("# C\n\nsee note\n")
        os.replace(root / "tmp4913", root / "c.md")
        wait_for(lambda: w.total("added") == 3)

        (root / "bad.json").write_text('[{"text": "never stored"}, {"te')
        wait_for(lambda: w.total("failed") == 1)
        (root / "sub").mkdir()
        (root / "sub" / "d.md").write_text("# D\n\ndee note\n")
        wait_for(lambda: w.total("added") == 4)  # the watch went on after the bad file

        (root / "b.md").unlink()
        wait_for(lambda: w.total("pruned") == 1)
        w.settle()
    assert w.errors == []
    assert w.total("pruned") == 1  # a.md vanished for a moment but was never pruned
    errors = [e for b in w.batches for e in b.errors]
    assert len(errors) == 1 and "bad.json" in errors[0] and "never stored" not in errors[0]
    assert w.result.failed == 1 and w.result.added == 4
    got = texts(vault_path)
    assert set(got) == {"second version of a", "see note", "dee note"}
    assert got["second version of a"]["version"] == 2
    assert got["dee note"]["locator"] == "sub/d.md#d"  # anchored at the watched folder


def test_a_burst_of_writes_is_read_once(vault_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    with Watcher(vault_path, [root]) as w:
        f = root / "log.md"
        for i in range(6):
            f.write_text(f"# Log\n\nentry {i}\n")
            time.sleep(DEBOUNCE / 6)
        wait_for(lambda: w.total("added") == 1)
        w.settle()
    assert w.total("files_read") == 1 and w.total("updated") == 0
    assert set(texts(vault_path)) == {"entry 5"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_watch_stops_cleanly_on_ctrl_c_and_sigterm(
    vault_path: Path, pwfile: Path, tmp_path: Path, sig: int
) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    env = {
        **os.environ,
        "MEMCTL_VAULT": str(vault_path),
        "MEMCTL_PASSPHRASE_FILE": str(pwfile),
        "MEMCTL_NO_AGENT": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from memctl.cli import main; main()",
            "ingest",
            "--watch",
            str(root),
            "--debounce",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: [lines.put(x) for x in stderr], daemon=True).start()
    seen: list[str] = []

    def saw(text: str) -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return any(text in line for line in seen)

    try:
        wait_for(lambda: saw("watching"))
        (root / "n.md").write_text("# N\n\nwatched from the cli\n")
        wait_for(lambda: saw("added 1"))
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: saw("stopped; session: added 1"))
    assert "Traceback" not in "".join(seen)
    assert set(texts(vault_path)) == {"watched from the cli"}
