"""How far the n-gram injection classifier goes: a sweep of its settings, each trained and judged
exactly as the shipped one is (`guards.train_injection.train`): 5-fold cross-validation on the deepset
train split plus the SQuAD questions added as benign, the threshold by the same rule, then the model
fitted on all of it scored on the held-out sets (deepset test, XSTest, JailbreakBench) for information.
Nothing is written to guards/artifacts.
Run: `python -m benchmarks.injection_ngrams [--data ../shared/data] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.harness import machine
from guards.train_injection import DATA, pct, train, training_data

# (character n-gram range, C); the first is the shipped setting.
SETTINGS: list[tuple[tuple[int, int], float]] = [
    ((1, 4), 10.0),
    ((1, 4), 30.0),
    ((1, 4), 100.0),
    ((1, 4), 1000.0),
    ((1, 3), 10.0),
    ((1, 3), 100.0),
    ((1, 5), 10.0),
    ((2, 4), 100.0),
    ((2, 5), 30.0),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        texts, labels, n_deepset = training_data(args.data)
    except FileNotFoundError as exc:
        print(f"{exc}: pass --data pointing at the shared data folder", file=sys.stderr)
        return 2
    rows = []
    for ngrams, c in SETTINGS:
        t = train(texts, labels, n_deepset, args.data, ngrams=ngrams, c=c)
        if not rows:
            print(f"{'chars':>6} {'C':>6} {'CV det':>7} {'thr':>6}  " + "  ".join(f"{k:>22}" for k in t.held_out))
        cells = "  ".join(
            f"{pct(r['detection_rate']):>9} {pct(r['false_positive_rate']):>8} fp" for r in t.held_out.values()
        )
        cv = t.cv["deepset_train"]
        print(
            f"{ngrams[0]}-{ngrams[1]:<4} {c:>6g} {pct(cv['detection_rate']):>7} {t.threshold:>6.3f}  {cells}",
            flush=True,
        )
        rows.append({"ngrams": ngrams, "C": c, "threshold": t.threshold, "cv": t.cv, "held_out": t.held_out,
                     "vocabulary_size": len(t.model.vocabulary), "seconds": round(t.seconds, 1)})  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "settings": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
