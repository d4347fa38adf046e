"""Recall: keyword (FTS5 bm25), vector and hybrid search over the vault, with filters."""
