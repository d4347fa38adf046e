"""Test isolation: no test touches a real vault, home or agent socket."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PASSPHRASE = "correct horse battery staple"
FAST_KDF = {"kdf_memory_mib": 8, "kdf_iterations": 1, "model": None}


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("MEMCTL_VAULT", str(tmp_path / "default-vault"))
    monkeypatch.setenv("NO_COLOR", "1")
    for var in ("MEMCTL_PASSPHRASE_FILE", "MEMCTL_KEY_FILE", "MEMCTL_AGENT_SOCKET"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    import memctl

    path = tmp_path / "vault"
    memctl.init_vault(path, passphrase=PASSPHRASE, **FAST_KDF)
    return path


@pytest.fixture
def vault(vault_path: Path):
    import memctl

    with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
        yield v
