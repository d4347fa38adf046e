"""memctl — a local-first, encrypted, auditable personal memory vault.

The Python API::

    import memctl
    memctl.init_vault("~/vault", passphrase="correct horse")
    with memctl.open_vault("~/vault", passphrase="correct horse") as v:
        rid = v.ingest("Dentist moved to Thursday 3pm", tags=["health"])
        hits = v.recall("when is the dentist?")

Names are imported lazily so ``import memctl`` (and ``memctl --help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["IngestSummary", "Vault", "__version__", "init_vault", "open_vault"]

if TYPE_CHECKING:
    from memctl.vault.core import IngestSummary, Vault, init_vault, open_vault


def __getattr__(name: str) -> Any:
    if name in {"init_vault", "open_vault", "Vault", "IngestSummary"}:
        from memctl.vault import core

        return getattr(core, name)
    raise AttributeError(name)
