"""What a fine-tuned small encoder buys over the shipped n-gram injection classifier.

    python -m benchmarks.injection_encoder [--lr 5e-5 --epochs 6] [--device cuda] [--json out.json]

Fine-tunes the packaged all-MiniLM-L6-v2 (every layer, with transformers' sequence-classification
head: BERT's pooler over [CLS], then a two-class layer) on the shipped classifier's training data
(deepset train + SQuAD dev questions as benign), picks each detector's threshold by the shipped rule
(the 98% quantile of the out-of-fold scores of deepset's benign train prompts; with the default 5
folds and no --limit, the folds are those `guards.train_injection` uses), and scores the
held-out sets: the encoder alone, the n-gram model alone, their mean and their max. Nothing is chosen
on a held-out set. Prints a table and writes JSON, with the encoder's per-prompt latency on the device.
`--frozen` trains no encoder: a logistic regression over the unchanged MiniLM vectors instead.

A GPU run takes a few minutes (six trainings on 2,046 prompts); on these 2 CPU cores one training
epoch takes minutes, so `--folds 2 --epochs 1 --limit 300` is the CPU smoke test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from guards.train_injection import (
    DATA,
    SEED,
    cross_validate,
    evaluation_sets,
    fit,
    folds,
    pct,
    rates,
    threshold_of,
    training_data,
)
from indexer.embedder import SentenceTransformerEmbedder
from runtime.models import packaged_embedder_path

Scores = dict[str, np.ndarray]
COMBINATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "encoder": lambda enc, ngram: enc,
    "ngram": lambda enc, ngram: ngram,
    "mean": lambda enc, ngram: (enc + ngram) / 2,
    "max": np.maximum,
}


class EncoderDetector:
    """The packaged MiniLM with a classification head, fine-tuned end to end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model: Any = None
        self.tokenizer: Any = None

    def _batches(self, texts: Sequence[str], size: int) -> Any:
        for i in range(0, len(texts), size):
            yield self.tokenizer(
                list(texts[i : i + size]),
                padding=True,
                truncation=True,
                max_length=self.args.max_length,
                return_tensors="pt",
            ).to(self.args.device)

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> EncoderDetector:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the new head's "newly initialised" report, once per fold
        torch.manual_seed(self.args.seed)
        path = str(packaged_embedder_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).to(self.args.device)
        y = np.asarray(labels)
        # Balanced class weights, as the n-gram model's logistic regression uses.
        weights = torch.tensor(len(y) / (2 * np.bincount(y, minlength=2)), dtype=torch.float32).to(self.args.device)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
        optimiser = torch.optim.AdamW(self.model.parameters(), lr=self.args.lr, weight_decay=0.01)
        steps = self.args.epochs * -(-len(texts) // self.args.batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: max(0.0, 1 - step / steps))
        order = list(range(len(texts)))
        rng = random.Random(self.args.seed)
        self.model.train()
        for _ in range(self.args.epochs):
            rng.shuffle(order)
            shuffled = [texts[i] for i in order]
            targets = torch.tensor(y[order]).to(self.args.device)
            for b, batch in enumerate(self._batches(shuffled, self.args.batch_size)):
                logits = self.model(**batch).logits
                loss = loss_fn(logits, targets[b * self.args.batch_size : (b + 1) * self.args.batch_size])
                loss.backward()
                optimiser.step()
                schedule.step()
                optimiser.zero_grad()
        self.model.eval()
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out: list[np.ndarray] = []
        with torch.inference_mode():
            for batch in self._batches(texts, 64):
                out.append(torch.softmax(self.model(**batch).logits.float(), dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


class FrozenDetector:
    """Logistic regression over the retrieval embedder's vectors, the encoder left as it is (the
    vectors the runtime computes for retrieval anyway). Each text is embedded once per run."""

    vectors: dict[str, np.ndarray] = {}

    def __init__(self, args: argparse.Namespace) -> None:
        self.embedder = _embedder(args.device)
        self.model: Any = None

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, np.asarray(self.embedder.embed(missing)), strict=True))
        return np.stack([self.vectors[t] for t in texts])

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> FrozenDetector:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced")
        self.model.fit(self._embed(texts), labels)
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self._embed(texts))[:, 1])


@lru_cache(maxsize=1)
def _embedder(device: str) -> SentenceTransformerEmbedder:
    """The runtime's own embedder on the packaged model, loaded once."""
    embedder = SentenceTransformerEmbedder(str(packaged_embedder_path()), device=device)
    embedder.start()
    return embedder


def detector(args: argparse.Namespace) -> EncoderDetector | FrozenDetector:
    return FrozenDetector(args) if args.frozen else EncoderDetector(args)


def latency_ms(score: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], device: str) -> float:
    """p50 of scoring one prompt at a time (as the input rail does), embedding included."""
    times = []
    for text in texts:
        FrozenDetector.vectors.pop(text, None)
        start = time.perf_counter()
        score([text])
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def out_of_fold(texts: list[str], labels: list[int], args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores of the encoder and of the n-gram model on the training texts, same folds."""
    enc = np.zeros(len(texts))
    for k, (train_idx, held_idx) in enumerate(folds(labels, args.folds), 1):
        started = time.perf_counter()
        model = detector(args).fit([texts[i] for i in train_idx], [labels[i] for i in train_idx])
        enc[held_idx] = model.score([texts[i] for i in held_idx])
        print(f"fold {k}/{args.folds}: {time.perf_counter() - started:.0f} s", flush=True)
    return enc, cross_validate(texts, labels, args.folds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (guards/, squad/)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--limit", type=int, default=None, help="train on this many prompts (a smoke test)")
    parser.add_argument(
        "--frozen", action="store_true", help="no fine-tuning: logistic regression over the unchanged vectors"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    try:
        texts, labels, n_deepset = training_data(args.data)
    except FileNotFoundError as exc:
        print(f"{exc}: pass --data pointing at the shared data folder", file=sys.stderr)
        return 2
    is_deepset = np.arange(len(texts)) < n_deepset
    if args.limit:
        keep = sorted(random.Random(SEED).sample(range(len(texts)), min(args.limit, len(texts))))
        texts, labels, is_deepset = [texts[i] for i in keep], [labels[i] for i in keep], is_deepset[keep]
    y = np.asarray(labels)

    started = time.perf_counter()
    enc_oof, ngram_oof = out_of_fold(texts, labels, args)
    encoder = detector(args).fit(texts, labels)
    ngram = fit(texts, labels)
    train_seconds = time.perf_counter() - started

    held_out = evaluation_sets(args.data)
    enc_scores: Scores = {name: encoder.score(t) for name, (t, _) in held_out.items()}
    ngram_scores: Scores = {name: np.array([ngram.score(x) for x in t]) for name, (t, _) in held_out.items()}
    results: dict[str, Any] = {}
    for combo, join in COMBINATIONS.items():
        oof = join(enc_oof, ngram_oof)
        threshold = threshold_of(oof[is_deepset & (y == 0)])
        row: dict[str, Any] = {"threshold": threshold}
        for name, (_, eval_labels) in held_out.items():
            row[name] = rates(join(enc_scores[name], ngram_scores[name]) > threshold, np.asarray(eval_labels))
        results[combo] = row

    sample = held_out["deepset_test"][0][:50] if "deepset_test" in held_out else []
    latency = latency_ms(encoder.score, sample, args.device) if sample else None
    print(f"\ntrained in {train_seconds:.0f} s on {args.device}; encoder p50 per prompt: {latency} ms")
    print(f"{'detector':9} {'deepset det':>11} {'deepset FPR':>11} {'XSTest FPR':>10} {'JBB det':>8} {'JBB FPR':>8}")
    for combo, row in results.items():
        cells = [
            pct(row.get("deepset_test", {}).get("detection_rate")),
            pct(row.get("deepset_test", {}).get("false_positive_rate")),
            pct(row.get("xstest", {}).get("false_positive_rate")),
            pct(row.get("jailbreakbench", {}).get("detection_rate")),
            pct(row.get("jailbreakbench", {}).get("false_positive_rate")),
        ]
        print(f"{combo:9} {cells[0]:>11} {cells[1]:>11} {cells[2]:>10} {cells[3]:>8} {cells[4]:>8}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "train_prompts": len(texts),
                    "train_seconds": round(train_seconds, 1),
                    "encoder_latency_ms_p50": latency,
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


if __name__ == "__main__":
    sys.exit(main())
