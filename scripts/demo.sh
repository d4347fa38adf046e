#!/usr/bin/env bash
# `make demo`: a throwaway vault with a generated passphrase, docs/ ingested, one recall.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
memctl="$here/.venv/bin/memctl"
tmp="$(mktemp -d -t memctl-demo.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
umask 077
"$here/.venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$tmp/passphrase"
export MEMCTL_VAULT="$tmp/vault" MEMCTL_PASSPHRASE_FILE="$tmp/passphrase"

echo "==> memctl init  (vault: $MEMCTL_VAULT)"
"$memctl" init
echo "==> memctl ingest docs/ README.md"
"$memctl" ingest "$here/docs" "$here/README.md" --tag docs
echo "==> memctl status"
"$memctl" status
echo '==> memctl recall "how do I erase a memory for good?"'
"$memctl" recall "how do I erase a memory for good?" --limit 5
echo "==> the vault holds no plaintext (grep for a word the docs contain):"
if grep -rqa "bm25" "$MEMCTL_VAULT"; then echo "  plaintext found!"; exit 1; else echo "  grep finds nothing"; fi
