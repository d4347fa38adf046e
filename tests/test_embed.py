"""Embedders: the hashing test embedder, model pinning and the real MiniLM model."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memctl.embed import load_embedder, model_identity
from memctl.embed.base import Embedder, FilePin, verify_files, weights_digest
from memctl.embed.hashing import HashingEmbedder
from memctl.errors import ModelError, UsageError

# ---------------------------------------------------------------- hashing embedder


def test_hashing_is_deterministic_across_instances() -> None:
    texts = ["Pay the electricity bill", "Über café naïve", ""]
    a = HashingEmbedder(64).encode(texts)
    b = load_embedder("hashing-64").encode(texts)
    assert a.dtype == np.float32
    assert a.shape == (3, 64)
    assert np.array_equal(a, b)


def test_hashing_rows_are_unit_length_even_for_empty_text() -> None:
    vecs = HashingEmbedder(32).encode(["", "   ", "a", "the quick brown fox" * 50])
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)


def test_hashing_similar_scores_higher_than_unrelated() -> None:
    e = HashingEmbedder(64)
    base, similar, unrelated = e.encode(
        [
            "my dentist appointment is on Tuesday morning",
            "dentist appointment moved to Tuesday",
            "kubernetes cluster autoscaling configuration",
        ]
    )
    assert base @ similar > base @ unrelated + 0.2


def test_hashing_identity_and_progress() -> None:
    e = load_embedder("hashing-128")
    assert isinstance(e, Embedder)
    ident = model_identity(e)
    assert ident == {"name": "memctl/hashing-128", "dim": 128, "weights_sha256": e.weights_sha256}
    assert len(e.weights_sha256) == 64
    assert e.weights_sha256 != HashingEmbedder(64).weights_sha256
    seen: list[int] = []
    out = e.encode([f"text {i}" for i in range(10)], batch_size=4, progress=seen.append)
    assert out.shape == (10, 128)
    assert seen == [4, 4, 2]


def test_hashing_rejects_tiny_dim() -> None:
    with pytest.raises(UsageError):
        load_embedder("hashing-2")


def test_importing_embed_and_vectors_stays_light() -> None:
    code = (
        "import sys, memctl.embed, memctl.embed.base, memctl.embed.hashing, memctl.embed.st, "
        "memctl.store.vectors\n"
        "heavy = [m for m in ('numpy', 'torch', 'sentence_transformers', 'transformers') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- file pinning


def _pin(path: Path) -> FilePin:
    data = path.read_bytes()
    return FilePin(len(data), hashlib.sha256(data).hexdigest())


def test_verify_files_accepts_intact_and_refuses_tampered(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(bytes(range(256)) * 64)
    (tmp_path / "sub").mkdir()
    tok = tmp_path / "sub" / "tokenizer.json"
    tok.write_text('{"vocab": {}}')
    pins = {"model.safetensors": _pin(weights), "sub/tokenizer.json": _pin(tok)}
    verify_files(tmp_path, pins, label="test")

    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01  # same size, one bit flipped
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.safetensors failed its SHA-256 check"):
        verify_files(tmp_path, pins, label="test")


def test_verify_files_size_and_missing(tmp_path: Path) -> None:
    f = tmp_path / "tokenizer.json"
    f.write_text("abc")
    pin = _pin(f)
    f.write_text("abcd")
    with pytest.raises(ModelError, match=r"tokenizer\.json has 4 bytes, expected 3"):
        verify_files(tmp_path, {"tokenizer.json": pin}, label="t")
    with pytest.raises(ModelError, match=r"vocab\.txt is missing"):
        verify_files(tmp_path, {"vocab.txt": pin}, label="t")


def test_weights_digest(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no weight files"):
        weights_digest(tmp_path)
    one = tmp_path / "model.safetensors"
    one.write_bytes(b"weights-1")
    assert weights_digest(tmp_path) == hashlib.sha256(b"weights-1").hexdigest()
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "model.safetensors").write_bytes(b"weights-2")
    both = weights_digest(tmp_path)
    assert both != hashlib.sha256(b"weights-1").hexdigest()
    (tmp_path / "2_Dense" / "model.safetensors").write_bytes(b"weights-3")
    assert weights_digest(tmp_path) != both


def test_unknown_model_name_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file.bin"
    not_a_dir.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a directory"):
        load_embedder(str(not_a_dir))
    with pytest.raises(ModelError, match="never downloads"):
        load_embedder("no-such-org/no-such-model-memctl-test")


def test_default_pins_match_the_brief() -> None:
    from memctl.embed.st import DEFAULT_MODEL_PINS, DEFAULT_WEIGHTS_SHA256

    pin = DEFAULT_MODEL_PINS["model.safetensors"]
    assert pin.size == 90_868_376
    assert DEFAULT_WEIGHTS_SHA256 == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    assert DEFAULT_MODEL_PINS["tokenizer.json"].sha256 == (
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
    )


# ---------------------------------------------------------------- the real model


@pytest.mark.model
def test_tampered_copy_of_the_real_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memctl.embed.st as st

    copy = tmp_path / "model"
    shutil.copytree(st.default_model_dir(), copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.seek(45_000_000)
        byte = fh.read(1)
        fh.seek(45_000_000)
        fh.write(bytes([byte[0] ^ 0x80]))
    monkeypatch.setattr(st, "default_model_dir", lambda: copy)
    with pytest.raises(ModelError, match=r"model\.safetensors failed its SHA-256 check"):
        load_embedder("default")


@pytest.mark.model
def test_real_model_loads_offline_and_ranks_paraphrase_first() -> None:
    e = load_embedder("all-MiniLM-L6-v2")
    assert e.dim == 384
    assert model_identity(e) == {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "dim": 384,
        "weights_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    }
    seen: list[int] = []
    vecs = e.encode(
        [
            "The cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Quarterly revenue grew by eight percent.",
        ],
        batch_size=2,
        progress=seen.append,
    )
    assert vecs.dtype == np.float32
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3
    assert sum(seen) == 3
    assert e.encode([]).shape == (0, 384)


@pytest.mark.model
def test_real_model_query_path_matches_batch_path_and_restores_threads() -> None:
    import torch

    e = load_embedder("all-MiniLM-L6-v2")
    texts = [f"note number {i} about the garden and the tomatoes" for i in range(6)]
    threads = torch.get_num_threads()
    batch = e.encode(texts)  # more than QUERY_BATCH_MAX: the pooled path
    one = e.encode(texts[:1])  # a query: the one-thread path, straight through the modules
    assert torch.get_num_threads() == threads
    assert np.allclose(one[0], batch[0], atol=1e-5)
    # a small batch of unequal lengths is padded: the mask must keep padding out of the mean
    mixed = ["tomatoes", "a much longer note about the garden, the tomatoes and the rain", ""]
    assert np.allclose(e.encode(mixed), e.encode(mixed * 2)[:3], atol=1e-5)
    assert np.allclose(np.linalg.norm(e.encode(mixed), axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_traced_query_path_matches_eager_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from memctl.embed import st

    e = load_embedder("all-MiniLM-L6-v2")
    texts = ["tomatoes", "where did I put the garden shears last spring?", "word " * 300]
    eager = np.concatenate([e.encode([t]) for t in texts])
    assert e._traced is st._UNSET  # one-shot processes never trace
    assert e.prepare_queries() is True
    assert e._traced is not None
    traced = np.concatenate([e.encode([t]) for t in texts])
    assert np.allclose(traced, eager, atol=1e-5)
    assert np.allclose(e.encode(texts), eager, atol=1e-5)  # batches stay eager
    assert e.prepare_queries() is True  # idempotent

    # a pipeline it does not know (here: CLS pooling) is never traced
    e._traced = st._UNSET
    monkeypatch.setattr(e._model[1], "pooling_mode", "cls")
    assert e.prepare_queries() is False
    monkeypatch.undo()
    # nor is one whose tracing fails: the eager path serves the queries
    e._traced = st._UNSET

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("tracing is not supported here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    assert e.prepare_queries() is False
    assert np.allclose(np.concatenate([e.encode([t]) for t in texts]), eager, atol=1e-6)
