"""How far the n-gram injection classifier goes: a sweep of its settings, each judged as the shipped one is.

For each setting (character n-gram range, an optional word n-gram block, the regularisation C):
5-fold cross-validation on the deepset train split plus the SQuAD questions `guards.train_injection`
adds as benign, the threshold by the same rule (the 98% quantile of the out-of-fold scores of deepset's
benign prompts), scores kept as the highest over the text and its sentences, then a model fitted on all
of it scored on the held-out sets (deepset test, XSTest, JailbreakBench) for information.
Run: `python -m benchmarks.injection_ngrams [--data ../shared/data] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import machine
from guards.evaluation import load_labelled
from guards.injection import char_ngrams, normalise, segments
from guards.train_injection import (
    DATA,
    SQUAD_NEGATIVES,
    TARGET_FPR,
    evaluation_sets,
    folds,
    pct,
    rates,
    squad_questions,
)

# (character n-gram range, word n-grams up to (0: none), C); the first is the shipped setting.
SETTINGS: list[tuple[tuple[int, int], int, float]] = [
    ((1, 4), 0, 10.0),
    ((1, 4), 0, 30.0),
    ((1, 4), 0, 100.0),
    ((1, 4), 0, 1000.0),
    ((1, 3), 0, 10.0),
    ((1, 3), 0, 100.0),
    ((1, 5), 0, 10.0),
    ((2, 4), 0, 100.0),
    ((1, 4), 2, 10.0),
    ((2, 5), 2, 30.0),
]


class Model:
    def __init__(self, chars: tuple[int, int], words: int, c: float) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.blocks = [TfidfVectorizer(analyzer=partial(char_ngrams, ngrams=chars), min_df=2, sublinear_tf=True)]
        if words:
            self.blocks.append(
                TfidfVectorizer(
                    preprocessor=normalise,
                    ngram_range=(1, words),
                    min_df=2,
                    sublinear_tf=True,
                    token_pattern=r"(?u)\b\w+\b",
                )
            )
        self.lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")

    def _x(self, texts: Sequence[str], fit: bool = False) -> Any:
        from scipy.sparse import hstack

        return hstack([b.fit_transform(texts) if fit else b.transform(texts) for b in self.blocks]).tocsr()

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> Model:
        self.lr.fit(self._x(texts, fit=True), labels)
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """The highest of each text's score and its sentences' (as `InjectionClassifier.score`)."""
        out = self.lr.predict_proba(self._x(texts))[:, 1]
        for i, text in enumerate(texts):
            if parts := segments(text):
                out[i] = max(out[i], self.lr.predict_proba(self._x(parts))[:, 1].max())
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    train, squad = args.data / "guards/deepset/train.jsonl", args.data / "squad/dev-v1.1.json"
    if not train.is_file() or not squad.is_file():
        print(f"{train} or {squad} is missing: pass --data pointing at the shared data folder", file=sys.stderr)
        return 2
    deepset = load_labelled(train)
    texts = deepset.texts + squad_questions(squad, SQUAD_NEGATIVES)
    y = np.array(deepset.labels + [0] * (len(texts) - len(deepset.texts)))
    n = len(deepset.texts)
    held = evaluation_sets(args.data)
    rows = []
    print(f"{'chars':>6} {'words':>5} {'C':>6} {'CV det':>7} {'thr':>6}  " + "  ".join(f"{k:>22}" for k in held))
    for chars, words, c in SETTINGS:
        started = time.perf_counter()
        oof = np.zeros(len(texts))
        for fit_idx, held_idx in folds(list(y)):
            model = Model(chars, words, c).fit([texts[i] for i in fit_idx], y[fit_idx])
            oof[held_idx] = model.score([texts[i] for i in held_idx])
        threshold = float(np.quantile(oof[:n][y[:n] == 0], 1 - TARGET_FPR))
        cv = rates(oof[:n] > threshold, y[:n])
        model = Model(chars, words, c).fit(texts, y)
        scored = {k: rates(model.score(t) > threshold, np.array(lab)) for k, (t, lab) in held.items()}
        rows.append({"chars": chars, "words": words, "C": c, "threshold": threshold, "cv": cv, "held_out": scored})
        rows[-1]["seconds"] = round(time.perf_counter() - started, 1)
        cells = "  ".join(
            f"{pct(r['detection_rate']):>9} {pct(r['false_positive_rate']):>8} fp" for r in scored.values()
        )
        print(f"{chars[0]}-{chars[1]:<4} {words:>5} {c:>6g} {pct(cv['detection_rate']):>7} {threshold:>6.3f}  {cells}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "settings": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
