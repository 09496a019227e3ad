"""Train the injection classifier and write `guards/artifacts/injection.{npz,json}`.

    python -m guards.train_injection [--data ../shared/data] [--out guards/artifacts/injection.npz]

Training data: the deepset prompt-injection train split (546 prompts, 203 attacks) plus SQuAD v1.1
dev questions as extra benign prompts (ordinary questions, so that a question is not an attack
for being English and well formed). The threshold is chosen by 5-fold cross-validation on the
deepset train split only: the out-of-fold score below which 98% of its benign prompts fall.
Texts longer than the 90% quantile of the deepset train prompts' lengths are scored by windows of
sentences of that length (`InjectionClassifier.score`); that length is fixed from the training split too.
The deepset test split, XSTest and JailbreakBench are never trained on nor used to choose anything;
when present they are scored at the end, for information.

Needs scikit-learn (a dependency of sentence-transformers) at training time only.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from guards.evaluation import load_labelled
from guards.injection import ARTIFACT, NGRAMS, InjectionClassifier, char_ngrams

logger = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TARGET_FPR = 0.02
SQUAD_NEGATIVES = 1500
C = 10.0
SEED = 0
WINDOW_QUANTILE = 0.9


def squad_questions(path: Path, n: int) -> list[str]:
    squad = json.loads(path.read_text())
    questions = [qa["question"] for art in squad["data"] for para in art["paragraphs"] for qa in para["qas"]]
    return random.Random(SEED).sample(questions, min(n, len(questions)))


def fit(
    texts: Sequence[str],
    labels: Sequence[int],
    threshold: float = 0.5,
    *,
    ngrams: tuple[int, int] = NGRAMS,
    c: float = C,
    window_chars: int | None = None,
) -> InjectionClassifier:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer=partial(char_ngrams, ngrams=ngrams), min_df=2, sublinear_tf=True)
    x = vec.fit_transform(texts)
    lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(x, labels)
    return InjectionClassifier(
        vocabulary=dict(vec.vocabulary_),
        idf=np.asarray(vec.idf_, dtype=np.float64),
        coef=np.asarray(lr.coef_[0], dtype=np.float64),
        intercept=float(lr.intercept_[0]),
        threshold=threshold,
        meta={},
        ngrams=ngrams,
        window_chars=window_chars,
    )


def folds(labels: Sequence[int], k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, held-out) index pairs of k folds stratified by label: the threshold rule's folds
    (benchmarks.injection_encoder splits by the same function, so its detectors see the same folds)."""
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=SEED).split(np.zeros(len(labels)), labels))


def cross_validate(
    texts: list[str],
    labels: list[int],
    k: int = 5,
    *,
    ngrams: tuple[int, int] = NGRAMS,
    c: float = C,
    window_chars: int | None = None,
) -> np.ndarray:
    """Out-of-fold scores for every training text."""
    oof = np.zeros(len(texts))
    for train_idx, held_idx in folds(labels, k):
        model = fit(
            [texts[i] for i in train_idx], [labels[i] for i in train_idx], ngrams=ngrams, c=c, window_chars=window_chars
        )
        oof[held_idx] = [model.score(texts[i]) for i in held_idx]
    return oof


def rates(flags: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    pos, neg = labels == 1, labels == 0
    return {
        "detection_rate": float(flags[pos].mean()) if pos.any() else None,
        "false_positive_rate": float(flags[neg].mean()) if neg.any() else None,
        "n": int(len(labels)),
    }


HELD_OUT = {
    "deepset_test": ["guards/deepset/test.jsonl"],
    "xstest": ["guards/xstest/xstest_prompts.csv"],
    "jailbreakbench": ["guards/jailbreakbench/benign-behaviors.csv", "guards/jailbreakbench/harmful-behaviors.csv"],
}
"""The held-out sets, read as `ripple eval guards` reads them; nothing is chosen on these."""


def evaluation_sets(data: Path) -> dict[str, tuple[list[str], list[int]]]:
    """The held-out sets whose files are all present, each as (texts, labels)."""
    sets: dict[str, tuple[list[str], list[int]]] = {}
    for name, files in HELD_OUT.items():
        if all((data / f).is_file() for f in files):
            parts = [load_labelled(data / f) for f in files]
            sets[name] = ([t for p in parts for t in p.texts], [y for p in parts for y in p.labels])
    return sets


def training_data(data: Path) -> tuple[list[str], list[int], int]:
    """The deepset train split followed by the SQuAD questions added as benign, and how many are deepset's."""
    train, squad = data / "guards/deepset/train.jsonl", data / "squad/dev-v1.1.json"
    for path in (train, squad):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
    deepset = load_labelled(train)
    negatives = squad_questions(squad, SQUAD_NEGATIVES)
    return deepset.texts + negatives, deepset.labels + [0] * len(negatives), len(deepset.texts)


def window_of(texts: Sequence[str]) -> int:
    """The window rule: texts longer than 9 in 10 of the training prompts are scored by windows this long."""
    return int(np.quantile([len(t) for t in texts], WINDOW_QUANTILE))


def threshold_of(benign_scores: np.ndarray) -> float:
    """The threshold rule: the score below which 1 - TARGET_FPR of the benign prompts' out-of-fold scores fall."""
    return float(np.quantile(benign_scores, 1 - TARGET_FPR))


@dataclass(frozen=True)
class Trained:
    model: InjectionClassifier
    threshold: float
    cv: dict[str, dict[str, float | None]]
    held_out: dict[str, dict[str, float | None]]
    seconds: float


def train(
    texts: list[str],
    labels: list[int],
    n_deepset: int,
    data: Path,
    *,
    ngrams: tuple[int, int] = NGRAMS,
    c: float = C,
) -> Trained:
    """Cross-validate, fix the threshold by the rule, fit on everything, and score the held-out sets
    found under `data` (for information). `texts[:n_deepset]` are deepset's, the rest added benign."""
    started = time.perf_counter()
    window = window_of(texts[:n_deepset])
    oof = cross_validate(texts, labels, ngrams=ngrams, c=c, window_chars=window)
    y = np.array(labels)
    ds_oof, ds_y = oof[:n_deepset], y[:n_deepset]
    threshold = threshold_of(ds_oof[ds_y == 0])
    cv = {
        "deepset_train": rates(ds_oof > threshold, ds_y),
        "squad_negatives": rates(oof[n_deepset:] > threshold, y[n_deepset:]),
    }
    model = fit(texts, labels, threshold, ngrams=ngrams, c=c, window_chars=window)
    held_out = {
        name: rates(np.array([model.score(t) > threshold for t in eval_texts]), np.array(eval_labels))
        for name, (eval_texts, eval_labels) in evaluation_sets(data).items()
    }
    return Trained(model, threshold, cv, held_out, time.perf_counter() - started)


def save(model: InjectionClassifier, out: Path, meta: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    grams = sorted(model.vocabulary, key=model.vocabulary.__getitem__)
    np.savez_compressed(
        out,
        vocabulary=np.array(grams, dtype=str),
        idf=model.idf.astype(np.float32),
        coef=model.coef.astype(np.float32),
        intercept=np.float64(model.intercept),
    )
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (guards/, squad/)")
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        texts, labels, n_deepset = training_data(args.data)
    except FileNotFoundError as exc:
        logger.info("%s: pass --data pointing at the shared data folder", exc)
        return 2
    trained = train(texts, labels, n_deepset, args.data)
    model, threshold, cv, held_out = trained.model, trained.threshold, trained.cv, trained.held_out
    logger.info("5-fold CV on deepset train (+%d SQuAD questions), threshold %.4f:", len(texts) - n_deepset, threshold)
    for name, r in cv.items():
        logger.info(
            "  %-16s detection %s  false positives %s", name, pct(r["detection_rate"]), pct(r["false_positive_rate"])
        )
    if held_out:
        logger.info("held out (for information; nothing was chosen on these):")
        for name, r in held_out.items():
            logger.info(
                "  %-16s detection %s  false positives %s",
                name,
                pct(r["detection_rate"]),
                pct(r["false_positive_rate"]),
            )

    meta = {
        "kind": "char-ngram tf-idf + logistic regression, max over sentences",
        "ngram_range": list(NGRAMS),
        "window_chars": model.window_chars,
        "window_rule": f"{WINDOW_QUANTILE:.0%} quantile of the deepset train prompts' lengths",
        "threshold": threshold,
        "threshold_rule": f"{1 - TARGET_FPR:.0%} quantile of out-of-fold scores of deepset train benign prompts",
        "training_data": {
            "deepset/prompt-injections train (Apache-2.0)": n_deepset,
            "SQuAD v1.1 dev questions as benign (CC BY-SA 4.0)": len(texts) - n_deepset,
        },
        "C": C,
        "vocabulary_size": len(model.vocabulary),
        "cv": cv,
        "held_out": held_out,
        "train_seconds": round(trained.seconds, 1),
    }
    save(model, args.out, meta)
    logger.info(
        "wrote %s (%d n-grams, %.0f KB) in %.0f s",
        args.out,
        len(model.vocabulary),
        args.out.stat().st_size / 1024,
        trained.seconds,
    )
    return 0


def pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:6.1%}"


if __name__ == "__main__":
    sys.exit(main())
