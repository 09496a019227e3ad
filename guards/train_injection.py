"""Train the injection classifier and its long-text veto; write `guards/artifacts/injection{,_veto}.{npz,json}`.

    python -m guards.train_injection [--data ../shared/data] [--out guards/artifacts/injection.npz] [--no-veto]

Training data: the deepset prompt-injection train split (546 prompts, 203 attacks) plus SQuAD v1.1
dev questions as extra benign prompts (ordinary questions, so that a question is not an attack
for being English and well formed). The threshold is chosen by 5-fold cross-validation on the
deepset train split only: the out-of-fold score below which 98% of its benign prompts fall.
Texts longer than the 90% quantile of the deepset train prompts' lengths are scored by windows of
sentences of that length (`InjectionClassifier.score`); that length is fixed from the training split too.
The deepset test split, XSTest and JailbreakBench are never trained on nor used to choose anything;
when present they are scored at the end, for information.

The long-text veto (`guards.injection.LongTextVeto`) is a logistic regression over the retrieval
embedder's vectors (RIPPLE_EMBED_MODEL, the packaged all-MiniLM-L6-v2 by default; the veto records
which). Positives: the deepset train attacks; negatives: its benign prompts, 500 of the SQuAD questions,
and hard negatives mined with the classifier just trained: the window it scores highest in each of this
project's docs (pieces of about 800 characters, leaving out the guardrails page, which quotes attacks,
and any piece that matches attack phrasings) and of
400 paragraphs from the first half of SQuAD dev's articles with a question, plus every window of those
docs it flags. The threshold: the out-of-fold score (5 folds) above which 98% of the training attacks
fall, so it clears at most 2% of them. Its hard negatives come from the docs as they are when it is
trained, so a retrain after a docs edit can move it a little. None of the evaluation's long benign sets
(`benchmarks/injection_wider.py`: the other half of SQuAD's articles, SciFact, the HTTPX docs) is used.

Needs scikit-learn (a dependency of sentence-transformers) at training time only.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from guards.evaluation import load_labelled
from guards.injection import ARTIFACT, NGRAMS, VETO_ARTIFACT, InjectionClassifier, char_ngrams

logger = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TARGET_FPR = 0.02
SQUAD_NEGATIVES = 1500
C = 10.0
SEED = 0
WINDOW_QUANTILE = 0.9
VETO_KEEP = 0.98
VETO_QUESTIONS = 500
VETO_PARAGRAPHS = 400
DOCS = Path(__file__).resolve().parent.parent / "docs"
DOCS_CHUNK = 800


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


def docs_pieces(folder: Path = DOCS, size: int = DOCS_CHUNK) -> list[str]:
    """This project's docs in pieces of about `size` characters, as a user would paste them, but for the
    guardrails page, which quotes attacks as examples; pieces that match attack phrasings are left out too."""
    from guards.checks import looks_planted

    pieces = []
    for path in sorted(p for p in folder.glob("*.md") if p.name != "guardrails.md"):
        piece = ""
        for paragraph in path.read_text().split("\n\n"):
            piece += paragraph + "\n\n"
            if len(piece) > size:
                if not looks_planted(piece):
                    pieces.append(f"Explain this part of the docs:\n\n{piece}")
                piece = ""
    return pieces


def squad_paragraphs(path: Path, n: int) -> list[str]:
    """Paragraphs of the first half of SQuAD dev's articles, each followed by its first question."""
    articles = json.loads(path.read_text())["data"]
    texts = [
        f"{p['context']}\n\nBased on the text above: {p['qas'][0]['question']}"
        for article in articles[: len(articles) // 2]
        for p in article["paragraphs"]
    ]
    return random.Random(SEED).sample(texts, min(n, len(texts)))


@dataclass(frozen=True)
class TrainedVeto:
    coef: np.ndarray
    intercept: float
    threshold: float
    meta: dict[str, Any]


def train_veto(
    classifier: InjectionClassifier,
    texts: list[str],
    labels: list[int],
    n_deepset: int,
    data: Path,
    embed: Callable[[Sequence[str]], Sequence[Sequence[float]]],
    embed_model: str,
) -> TrainedVeto:
    """The long-text veto for `classifier` (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    long_benign = docs_pieces() + squad_paragraphs(data / "squad/dev-v1.1.json", VETO_PARAGRAPHS)
    hard = [classifier.top_window(t) for t in long_benign]
    hard += [
        w
        for t in docs_pieces()
        for w in classifier.windows(t)
        if classifier.score(w) > classifier.threshold and w not in hard
    ]
    rows = texts[: n_deepset + VETO_QUESTIONS] + hard
    y = np.array(labels[: n_deepset + VETO_QUESTIONS] + [0] * len(hard))
    x = np.array([v for i in range(0, len(rows), 64) for v in embed(rows[i : i + 64])], dtype=np.float64)

    def fit_lr(idx: np.ndarray) -> Any:
        return LogisticRegression(max_iter=5000, class_weight="balanced").fit(x[idx], y[idx])

    oof = np.zeros(len(rows))
    for train_idx, held_idx in folds(list(y)):
        oof[held_idx] = fit_lr(train_idx).predict_proba(x[held_idx])[:, 1]
    # the highest threshold that clears at most 1 - VETO_KEEP of the training attacks (0: it clears none)
    attacks = np.sort(oof[y == 1])
    cleared = int(len(attacks) * (1 - VETO_KEEP))
    threshold = float(attacks[cleared - 1]) if cleared else 0.0
    lr = fit_lr(np.arange(len(rows)))
    n_train = n_deepset + VETO_QUESTIONS
    meta = {
        "kind": "logistic regression over the embedding of the window the n-gram classifier flagged",
        "embed_model": embed_model,
        "threshold": threshold,
        "threshold_rule": f"clears at most {1 - VETO_KEEP:.0%} of the training attacks (out-of-fold, 5 folds)",
        "training_data": {
            "deepset/prompt-injections train (Apache-2.0)": n_deepset,
            "SQuAD v1.1 dev questions as benign (CC BY-SA 4.0)": VETO_QUESTIONS,
            "hard negatives: windows the classifier flags in docs/*.md and SQuAD v1.1 dev paragraphs": len(hard),
        },
        "cv": {
            "training_attacks_cleared": float((oof[y == 1] <= threshold).mean()),
            "hard_negatives_cleared": float((oof[n_train:] <= threshold).mean()),
            "deepset_benign_cleared": float((oof[:n_deepset][y[:n_deepset] == 0] <= threshold).mean()),
        },
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return TrainedVeto(np.asarray(lr.coef_[0]), float(lr.intercept_[0]), threshold, meta)


def save_veto(veto: TrainedVeto, out: Path) -> None:
    np.savez_compressed(out, coef=veto.coef.astype(np.float32), intercept=np.float64(veto.intercept))
    out.with_suffix(".json").write_text(json.dumps(veto.meta, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (guards/, squad/)")
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    parser.add_argument("--no-veto", action="store_true", help="train the n-gram classifier only")
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
    if not args.no_veto:
        from runtime.components import build_embedder
        from runtime.settings import Settings

        embedder = build_embedder(Settings(**{}))  # the environment's RIPPLE_ settings, as the server reads them
        embedder.start()
        veto = train_veto(model, texts, labels, n_deepset, args.data, embedder.embed, embedder.model_id)
        out = args.out.parent / VETO_ARTIFACT.name
        save_veto(veto, out)
        cleared = veto.meta["cv"]
        logger.info(
            "long-text veto (%s), threshold %.4f: clears %s of the training attacks and %s of the hard negatives "
            "(out of fold); wrote %s in %.0f s",
            veto.meta["embed_model"],
            veto.threshold,
            pct(cleared["training_attacks_cleared"]).strip(),
            pct(cleared["hard_negatives_cleared"]).strip(),
            out,
            veto.meta["train_seconds"],
        )
    return 0


def pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:6.1%}"


if __name__ == "__main__":
    sys.exit(main())
