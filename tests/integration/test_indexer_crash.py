"""kill -9 during `ripple index`, run again: the same points as an uninterrupted run (real embedder, real Qdrant)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.integration.conftest import RIPPLE, ripple_env, run_ripple, stored

WORDS = "lunar beacon clock drift orbit station relay signal quartz pulse harbour granite meadow lantern".split()


def make_corpus(folder: Path, files: int = 30) -> None:
    folder.mkdir()
    for i in range(files):
        body = " ".join(
            f"{WORDS[(i + j) % len(WORDS)]} {WORDS[(i * j) % len(WORDS)]} number {i}-{j}." for j in range(120)
        )
        (folder / f"doc{i:02d}.md").write_text(f"# Document {i}\n\n{body}\n")


def points(qdrant: Path) -> tuple[str | None, set[tuple[str, str, str]]]:
    published, _, held = stored(qdrant)
    return published, {(pid, p["content_hash"], p["text"]) for pid, p in held}


def test_killed_runs_end_like_an_uninterrupted_one(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    make_corpus(corpus, files=40)
    started = time.monotonic()
    run_ripple("index", str(corpus), "--quiet", env=ripple_env(tmp_path / "reference", RIPPLE_EMBED_BATCH_SIZE="8"))
    duration = time.monotonic() - started
    reference = points(tmp_path / "reference")
    assert reference[0] is not None and len(reference[1]) > 80

    killed = 0
    for fraction in (0.6, 0.75, 0.9):  # each a fresh folder: killed once at this point, then run to the end
        # The reference's duration is a guess at a later run's (a busy machine makes either slower): a run
        # that finished before its kill is tried again in a fresh folder, killed sooner.
        for attempt in range(4):
            folder = tmp_path / f"crashed-{fraction}-{attempt}"
            env = ripple_env(folder, RIPPLE_EMBED_BATCH_SIZE="8")
            proc = subprocess.Popen(
                [RIPPLE, "index", str(corpus), "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(duration * fraction * 0.6**attempt)
            was_running = proc.poll() is None
            if was_running:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            run_ripple("index", str(corpus), "--quiet", env=env)
            crashed = points(folder)
            assert crashed[0] == reference[0]
            differ = f"killed at {fraction:.0%} (try {attempt + 1}): ids, hashes or texts differ from the reference"
            assert crashed[1] == reference[1], differ
            if was_running:
                killed += 1
                break
    assert killed >= 2, f"only {killed} of 3 runs were still running when killed"
