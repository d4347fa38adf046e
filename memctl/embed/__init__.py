"""Embedding models behind one small interface.

Importing this package is cheap (stdlib only); numpy, torch and sentence-transformers are
imported when an embedder is built or used.
"""

from __future__ import annotations

import re
from pathlib import Path

from memctl.embed.base import Embedder, ProgressFn, model_identity

__all__ = ["DEFAULT_SPEC", "Embedder", "ProgressFn", "load_embedder", "model_identity"]

DEFAULT_SPEC = "default"
_HASHING = re.compile(r"(?:memctl/)?hashing-(\d+)")


def load_embedder(spec: str | Path = DEFAULT_SPEC) -> Embedder:
    """Build the embedder a spec names.

    - ``"default"`` or ``"all-MiniLM-L6-v2"``: the shipped MiniLM model, verified by hash;
    - ``"hashing-<dim>"`` (e.g. ``"hashing-64"``): the deterministic test embedder;
    - a local directory or a model name already in the local Hugging Face cache.

    Raises ModelError when the model is missing, cannot load or fails verification.
    """
    text = str(spec).strip()
    match = _HASHING.fullmatch(text)
    if match:
        from memctl.embed.hashing import HashingEmbedder

        return HashingEmbedder(int(match.group(1)))
    from memctl.embed.st import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(text or DEFAULT_SPEC)
