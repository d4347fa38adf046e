"""Ingestion: turning files, stdin and sources into records."""
