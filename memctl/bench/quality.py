"""`memctl bench quality --dataset locomo PATH`: retrieval quality through the public API.

The LoCoMo task (docs/quality.md): one memory per dialogue turn (``"speaker: text [image:
caption]"``), one namespace per conversation, each session a source (a chat export would look
the same), the session's date as ``observed_at``; every question is asked in its conversation's
namespace; the score is evidence recall@k — the share of a question's evidence turns found in
the top k — averaged over questions with evidence.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memctl.errors import UsageError

KS = (1, 5, 10, 20)
EVIDENCE = re.compile(r"D\d+:\d+")
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
PASSPHRASE = "bench passphrase — not a secret"  # noqa: S105 - a throwaway bench vault


def _session_time(text: str | None) -> str | None:
    if not text:
        return None
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC).isoformat()
        except ValueError:
            continue
    return None


def load_locomo(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the LoCoMo dataset ({exc})") from None
    if not isinstance(data, list) or not data or "conversation" not in data[0]:
        raise UsageError(f"{path}: not a LoCoMo file (a list of samples with 'conversation')")
    return data


def items_of(sample: dict[str, Any]) -> list[dict[str, Any]]:
    conv = sample["conversation"]
    ns = re.sub(r"[^A-Za-z0-9_.-]", "-", str(sample["sample_id"]))
    out = []
    sessions = sorted((int(k.split("_")[1]), k) for k in conv if re.fullmatch(r"session_\d+", k))
    for number, key in sessions:
        when = _session_time(conv.get(f"{key}_date_time"))
        for turn in conv[key]:
            text = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                text += f" [image: {turn['blip_caption']}]"
            out.append(
                {
                    "text": text,
                    "namespace": ns,
                    "source": f"locomo://{ns}/session-{number}",
                    "locator": turn["dia_id"],
                    "observed_at": when,
                    "kind": "chat",
                }
            )
    return out


def run(
    path: Path,
    *,
    model: str = "default",
    modes: tuple[str, ...] = ("keyword", "vector", "hybrid"),
    limit_samples: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    import memctl

    data = load_locomo(path)[:limit_samples]
    tmp = Path(tempfile.mkdtemp(prefix="memctl-quality-"))
    try:
        vault_path = tmp / "vault"
        memctl.init_vault(
            vault_path, passphrase=PASSPHRASE, model=model, kdf_memory_mib=8, kdf_iterations=1
        )
        with memctl.open_vault(vault_path, passphrase=PASSPHRASE) as v:
            for sample in data:
                progress(f"ingest {sample['sample_id']}")
                v.ingest_many(items_of(sample))
            sums = {m: defaultdict(float) for m in modes}
            cats: dict[str, dict[str, dict[int, float]]] = {
                m: defaultdict(lambda: defaultdict(float)) for m in modes
            }
            cat_n: dict[str, int] = defaultdict(int)
            # per conversation, so a split (e.g. dev 0-4 / held-out 5-9) can be computed
            per: dict[str, dict[str, dict[int, float]]] = {
                m: defaultdict(lambda: defaultdict(float)) for m in modes
            }
            per_n: dict[str, int] = defaultdict(int)
            n = 0
            for sample in data:
                ns = re.sub(r"[^A-Za-z0-9_.-]", "-", str(sample["sample_id"]))
                sid = str(sample["sample_id"])
                progress(f"questions of {sample['sample_id']}")
                for qa in sample["qa"]:
                    evidence = set(EVIDENCE.findall(" ".join(map(str, qa.get("evidence") or []))))
                    if not evidence:
                        continue
                    n += 1
                    per_n[sid] += 1
                    cat = CATEGORIES.get(qa.get("category"), str(qa.get("category")))
                    cat_n[cat] += 1
                    for mode in modes:
                        hits = v.recall(str(qa["question"]), mode=mode, namespace=ns, limit=max(KS))
                        found = [h["locator"] for h in hits]
                        for k in KS:
                            r = len(evidence & set(found[:k])) / len(evidence)
                            sums[mode][k] += r
                            cats[mode][cat][k] += r
                            per[mode][sid][k] += r
        result: dict[str, Any] = {"dataset": str(path), "questions": n, "model": model}
        for mode in modes:
            result[mode] = {f"R@{k}": round(sums[mode][k] / n, 4) for k in KS}
            result[mode]["by_category"] = {
                c: {f"R@{k}": round(cats[mode][c][k] / cat_n[c], 4) for k in KS}
                for c in sorted(cat_n)
            }
            result[mode]["by_sample"] = {
                s: {"questions": per_n[s]}
                | {f"R@{k}": round(per[mode][s][k] / per_n[s], 4) for k in KS}
                for s in per_n
            }
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
