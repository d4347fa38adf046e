"""Start-up stays light, and generated docs/completions match the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "sentence_transformers", "numpy", "mcp", "pygit2", "transformers", "sqlcipher3")

PROBE = """
import json, sys
sys.argv = ["memctl"] + sys.argv[1:]
from memctl.cli import main
try:
    main()
except SystemExit:
    pass
heavy = %r
print(json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["recall", "--help"], ["ingest", "--help"]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert loaded == [], f"memctl {' '.join(args)} imported {loaded}"
    assert "Usage" in proc.stdout


def test_cli_reference_in_sync() -> None:
    from memctl.cli.docgen import cli_markdown

    assert (ROOT / "docs" / "cli.md").read_text() == cli_markdown(), (
        "docs/cli.md is stale: run `make docs`"
    )


def test_completions_in_sync() -> None:
    from memctl.cli.docgen import completions

    for name, text in completions().items():
        path = ROOT / "completions" / name
        assert path.read_text() == text, f"completions/{name} is stale: run `make completions`"


def test_bash_completion_script_is_valid_and_completes() -> None:
    script = ROOT / "completions" / "memctl.bash"
    subprocess.run(["bash", "-n", str(script)], check=True)
    probe = (
        f"source {script}; COMP_WORDS=(memctl rec); COMP_CWORD=1; _memctl; "
        'echo "${COMPREPLY[@]}"; COMP_WORDS=(memctl key re); COMP_CWORD=2; _memctl; '
        'echo "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()
    assert first == "recall"
    assert second == "remove"
