"""Ingest benchmarks, ``memctl bench ingest``: the cron no-op and a big mailbox.

- :func:`bench_noop`: a folder of ``n_files`` Markdown notes is ingested once, then ingested
  again unchanged — the cron no-op, which must not open a single note (target: < 2 s for
  10,000 files). Timed in-process on an open vault (``ingest_noop_10k_files_s``) and, with
  ``cli=True``, as a whole ``memctl ingest --quiet DIR`` process unlocking with a key file
  (interpreter start, plugin loading and unlock included).
- :func:`bench_mbox`: a generated mbox of ``mb`` megabytes (realistic messages: headers,
  quoted replies, signatures) ingested into a keyword-only vault (no embeddings); target
  < 60 s for 100 MB.

Vaults use the fast test KDF: unlock cost is not what is measured here. :func:`run` runs
both and returns one flat object of numbers (the ``--json`` output).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

PASSPHRASE = "memctl benchmark passphrase"  # noqa: S105 - a throwaway vault
_WORDS = [
    "garden",
    "compost",
    "tulip",
    "passport",
    "lisbon",
    "dentist",
    "thursday",
    "invoice",
    "project",
    "deadline",
    "budget",
    "meeting",
    "kernel",
    "release",
    "laptop",
    "battery",
    "coffee",
    "bicycle",
    "train",
    "ticket",
    "museum",
    "recipe",
    "lentil",
    "weather",
    "forecast",
    "mountain",
    "river",
    "holiday",
    "insurance",
    "contract",
    "landlord",
    "heating",
    "window",
    "paint",
    "library",
    "novel",
    "chapter",
    "review",
    "draft",
    "backup",
    "server",
    "cluster",
    "deploy",
    "python",
    "rust",
    "postgres",
]


@contextmanager
def _workdir(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    path = Path(tempfile.mkdtemp(prefix="memctl-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sentence(rng: random.Random, n: int = 12) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def make_notes(root: Path, n_files: int, seed: int = 1) -> None:
    """``n_files`` small Markdown notes in folders of 100, two sections each."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    for i in range(n_files):
        folder = root / f"d{i // 100:04}"
        folder.mkdir(parents=True, exist_ok=True)
        body = (
            f"---\ntags: [bench, n{i % 7}]\n---\n# Note {i}\n\n{_sentence(rng)}\n\n"
            f"## Details\n\n{_sentence(rng, 20)} {_sentence(rng)}\n"
        )
        (folder / f"note{i:05}.md").write_text(body)


def _vault(path: Path) -> Path:
    import memctl

    memctl.init_vault(path, passphrase=PASSPHRASE, kdf_memory_mib=8, kdf_iterations=1, model=None)
    return path


def bench_noop(
    n_files: int = 10_000, *, workdir: Path | None = None, cli: bool = False
) -> dict[str, Any]:
    """Seconds for an unchanged re-ingest of ``n_files`` notes (and the first ingest)."""
    import memctl
    from memctl.ingest.pipeline import run_ingest

    with _workdir(workdir) as tmp:
        notes = tmp / "notes"
        make_notes(notes, n_files)
        vault_path = _vault(tmp / "vault")
        with memctl.open_vault(vault_path, passphrase=PASSPHRASE, actor="cli") as v:
            t0 = time.perf_counter()
            first = run_ingest(v, [str(notes)])
            t1 = time.perf_counter()
            again = run_ingest(v, [str(notes)])
            t2 = time.perf_counter()
            key = tmp / "bench.key"
            if cli:
                v.add_key_file(key, label="bench")
        out: dict[str, Any] = {
            "files": n_files,
            "ingest_initial_files_s": round(t1 - t0, 3),
            "initial_records": first.added,
            "ingest_noop_10k_files_s": round(t2 - t1, 3),
            "noop_files_read": again.files_read,
        }
        if cli:
            env = {
                **os.environ,
                "MEMCTL_VAULT": str(vault_path),
                "MEMCTL_KEY_FILE": str(key),
                "MEMCTL_NO_AGENT": "1",
            }
            env.pop("MEMCTL_PASSPHRASE_FILE", None)
            cmd = [sys.executable, "-c", "from memctl.cli import main; main()"]
            t3 = time.perf_counter()
            subprocess.run([*cmd, "ingest", "--quiet", str(notes)], env=env, check=True)
            out["ingest_noop_10k_files_cli_s"] = round(time.perf_counter() - t3, 3)
        return out


def make_mbox(path: Path, mb: float, seed: int = 2) -> int:
    """Write an mbox of about ``mb`` megabytes; returns the number of messages."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    target = int(mb * 1024 * 1024)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    people = [f"{name}@example.org" for name in ("ana", "bo", "chen", "dara", "eli", "fox")]
    written = 0
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        while written < target:
            when = start + timedelta(minutes=37 * count)
            sender, rcpt = rng.sample(people, 2)
            subject = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 7)))
            paragraphs = [
                " ".join(_sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 6)))
                for _ in range(rng.randint(2, 6))
            ]
            quoted = "\n".join("> " + _sentence(rng) for _ in range(rng.randint(0, 8)))
            reply = count % 3 == 1
            lines = [
                f"From {sender} {when.strftime('%a %b %d %H:%M:%S %Y')}",
                f"From: {sender}",
                f"To: {rcpt}",
                f"Subject: {'Re: ' if reply else ''}{subject}",
                f"Date: {format_datetime(when)}",
                f"Message-ID: <bench-{count}@example.org>",
            ]
            if reply:
                lines.append(f"In-Reply-To: <bench-{count - 1}@example.org>")
            lines += [
                "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=utf-8",
                "",
                "\n\n".join(paragraphs),
            ]
            if quoted:
                lines += ["", f"On {format_datetime(when)}, {rcpt} wrote:", quoted]
            lines += ["", "-- ", f"{sender.split('@')[0].title()}", ""]
            block = "\n".join(lines).replace("\nFrom ", "\n>From ") + "\n"
            fh.write(block)
            written += len(block.encode())
            count += 1
    return count


def bench_mbox(mb: float = 100, *, workdir: Path | None = None) -> dict[str, Any]:
    """Seconds to ingest a generated ``mb``-megabyte mbox into a keyword-only vault."""
    import memctl
    from memctl.ingest.pipeline import run_ingest

    with _workdir(workdir) as tmp:
        mbox = tmp / "inbox.mbox"
        messages = make_mbox(mbox, mb)
        vault_path = _vault(tmp / "vault")
        with memctl.open_vault(vault_path, passphrase=PASSPHRASE, actor="cli") as v:
            t0 = time.perf_counter()
            report = run_ingest(v, [str(mbox)])
            elapsed = time.perf_counter() - t0
        size_mb = mbox.stat().st_size / 1024 / 1024
        return {
            "mbox_mb": round(size_mb, 1),
            "mbox_messages": messages,
            "mbox_records": report.added,
            "mbox_failed": report.failed,
            "ingest_mbox_100mb_s": round(elapsed, 2),
            "ingest_mbox_mb_per_s": round(size_mb / elapsed, 3) if elapsed > 0 else 0.0,
        }


def run(
    files: int = 10_000,
    mbox_mb: float = 100,
    *,
    cli: bool = True,
    workdir: Path | None = None,
    progress: Any = None,
) -> dict[str, float | int]:
    """Both benchmarks; a flat object of numbers (with the 1-minute load average before and
    after, since the machine may be shared)."""
    say = progress or (lambda _msg: None)
    out: dict[str, float | int] = {"load_1m_before": round(os.getloadavg()[0], 2)}
    say(f"cron no-op: {files} notes, ingested once then again unchanged")
    out.update(bench_noop(files, workdir=workdir / "noop" if workdir else None, cli=cli))
    say(f"mbox: {mbox_mb} MB generated, ingested without embeddings")
    out.update(bench_mbox(mbox_mb, workdir=workdir / "mbox" if workdir else None))
    out["load_1m_after"] = round(os.getloadavg()[0], 2)
    return out
