"""Does keyword pruning cost retrieval quality? LoCoMo keyword recall@k, pruned and exact.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/prune_quality.py ../shared/data/locomo10.json \\
        [--shares 0.02,0.01]

LoCoMo's namespaces hold a few hundred turns each, far below ``PRUNE_MIN_ROWS``, so the normal
bench never prunes there. This forces pruning at any size (``PRUNE_MIN_ROWS = 0``) for each
common-term share given, and runs the keyword half of ``memctl bench quality`` (the same
questions, namespaces and evidence), next to the exact search (``PRUNE_MIN_ROWS`` out of
reach). A diagnostic: the figures for the record are in docs/usage.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from memctl.bench import quality
from memctl.recall import keyword


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--shares", default="0.02,0.01")
    args = ap.parse_args()
    runs: list[tuple[str, int, float]] = [("exact", 1 << 62, keyword.COMMON_SHARE)]
    runs += [(f"pruned, share {s}", 0, float(s)) for s in args.shares.split(",")]
    out = {}
    for name, min_rows, share in runs:
        keyword.PRUNE_MIN_ROWS, keyword.COMMON_SHARE = min_rows, share
        res = quality.run(args.dataset, model="hashing-64", modes=("keyword",))
        out[name] = {k: v for k, v in res["keyword"].items() if k.startswith("R@")}
        print(name, out[name], flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
