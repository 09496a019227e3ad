"""Measure the input rails on a labelled set: detection, false positives and latency, per check and overall.

Per check means each of `guards.actions.INPUT_CHECKS` called directly; overall means the whole input
rail run through real NeMo Guardrails (`NemoGuard.check_input`) as the server runs it: for the packaged
flows, their actions through NeMo's action dispatcher (`RIPPLE_GUARDS_DIRECT`), else `check_async`,
whose Colang run then counts too.
Datasets: JSONL or CSV with `text` and `label` (1 = attack), or the two public sets by their headers:
XSTest (`prompt`, `label` safe/unsafe) and JailbreakBench behaviours (`goal`; the label comes from the
file name, benign-behaviors.csv or harmful-behaviors.csv). Output rails are not measured here.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from guards.actions import INPUT_CHECKS
from guards.protocol import Guard

_TRUE = {"1", "true", "yes", "attack", "injection", "jailbreak", "unsafe", "harmful"}
_FALSE = {"0", "false", "no", "benign", "safe"}


@dataclass(frozen=True)
class LabelledSet:
    name: str
    texts: list[str]
    labels: list[int]


def _label(value: Any, where: str) -> int:
    word = str(value).strip().lower()
    if word in _TRUE:
        return 1
    if word in _FALSE:
        return 0
    raise ValueError(f"{where}: label {value!r} is neither 1/0, attack/benign nor unsafe/safe")


def load_labelled(path: Path, text_column: str | None = None, label_column: str | None = None) -> LabelledSet:
    """Rows of `path` as texts and 0/1 labels; see the module docstring for the formats recognised."""
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {number} is not JSON ({exc.msg}): one object per line") from None
    elif path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ValueError(f"{path}: give a .jsonl or .csv file")
    if not rows:
        raise ValueError(f"{path} has no rows")
    columns = set(rows[0])
    text_col = text_column or next((c for c in ("text", "prompt", "goal") if c in columns), None)
    if text_col is None or text_col not in columns:
        raise ValueError(f"{path}: no text column (have {sorted(columns)}); name one with --text-column")
    label_col = label_column or ("label" if "label" in columns else None)
    texts = [str(r[text_col]) for r in rows]
    if label_col is not None:
        if label_col not in columns:
            raise ValueError(f"{path}: no column {label_col!r} (have {sorted(columns)})")
        labels = [_label(r[label_col], f"{path} row {i + 1}") for i, r in enumerate(rows)]
    elif "benign" in path.stem or "harmful" in path.stem:  # JailbreakBench behaviours: one class per file
        labels = [int("harmful" in path.stem)] * len(rows)
    else:
        raise ValueError(f"{path}: no label column (have {sorted(columns)}); name one with --label-column")
    return LabelledSet(path.name, texts, labels)


def summarise(flags: Sequence[bool], labels: Sequence[int], seconds: Sequence[float]) -> dict[str, Any]:
    f, y, ms = np.array(flags, dtype=bool), np.array(labels), np.array(seconds) * 1000
    return {
        "detection_rate": float(f[y == 1].mean()) if (y == 1).any() else None,
        "false_positive_rate": float(f[y == 0].mean()) if (y == 0).any() else None,
        "attacks": int((y == 1).sum()),
        "benign": int((y == 0).sum()),
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p95_ms": float(np.percentile(ms, 95)),
    }


def _timed(check: Callable[[str], bool], text: str) -> tuple[bool, float]:
    started = time.perf_counter()
    flagged = check(text)
    return flagged, time.perf_counter() - started


async def evaluate_input_rails(data: LabelledSet, guard: Guard) -> dict[str, Any]:
    """Each input check on its own, then the started `guard`'s whole input rail; overall rates on top."""
    rails: dict[str, Any] = {}
    for name, check in INPUT_CHECKS.items():
        check(data.texts[0])  # loads what the check needs before the clock runs
        results = [_timed(check, text) for text in data.texts]
        rails[name] = summarise([r[0] for r in results], data.labels, [r[1] for r in results])
    flags, seconds = [], []
    for text in data.texts:
        started = time.perf_counter()
        verdict = await guard.check_input([{"role": "user", "content": text}])
        seconds.append(time.perf_counter() - started)
        flags.append(not verdict.allowed)
    overall = summarise(flags, data.labels, seconds)
    return {"dataset": data.name, **overall, "rails": {**rails, "overall (NeMo)": overall}}


async def no_llm(messages: Sequence[dict[str, str]], options: dict[str, Any]) -> AsyncIterator[str]:
    """The chat function for rails that must not call a model: it says so if one does."""
    raise RuntimeError(
        "this rails config asks the LLM for a verdict; `ripple eval guards` runs local rails only "
        "(use guards/config, the default)"
    )
    yield ""  # pragma: no cover - makes this an async generator


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['dataset']}: {report['attacks']} attacks, {report['benign']} benign"]
    lines.append(f"{'rail':<16} {'detection':>9} {'false pos':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for name, r in report["rails"].items():
        det = "n/a" if r["detection_rate"] is None else f"{r['detection_rate']:.1%}"
        fpr = "n/a" if r["false_positive_rate"] is None else f"{r['false_positive_rate']:.1%}"
        lines.append(f"{name:<16} {det:>9} {fpr:>9} {r['latency_p50_ms']:>8.2f} {r['latency_p95_ms']:>8.2f}")
    return "\n".join(lines)
