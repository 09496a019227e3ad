"""The CLI's refusals: one line that says what to change, an exit status, and no traceback; checked
before any work is done (a model load, an engine start, an hour of evaluation)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime.cli import app

RUNNER = CliRunner()


def run(*args: str) -> tuple[int, str]:
    """Exit status and everything the command printed; it must end by exiting, not by an exception."""
    result = RUNNER.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args,status,words",
    [
        (["eval", "retrieval", "--dataset", "no-such-folder"], 1, "cannot read no-such-folder"),
        (["eval", "retrieval", "--squad", "no-such.json", "--max-queries", "0"], 2, "max-queries"),
        (["index", "README.md", "--json", "no-such-folder/summary.json"], 1, "does not exist"),
        (["index", "README.md", "--json", "-"], 1, "not supported"),
        (["index", "README.md", "--collection", "a/b c"], 2, "not a collection name"),
        (["ask", "  "], 1, "the question is empty"),
        (["ask", "--max-tokens", "0", "hello"], 2, "max-tokens"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_work(args: list[str], status: int, words: str) -> None:
    code, text = run(*args)
    assert code == status and words in text, text


def test_a_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    dataset = tmp_path / "set.jsonl"
    dataset.write_text('{"text": "hi", "label": 0}\nnot json\n')
    code, text = run("eval", "guards", "--dataset", str(dataset))
    assert code == 1 and "line 2 is not JSON" in text, text


def test_serve_fails_at_once_on_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, text = run("serve", "--port", str(port))
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in text, text


@pytest.mark.parametrize(
    "setting,value,words",
    [
        ("RIPPLE_QDRANT_PATH", "{tmp}/a-file/qdrant", "cannot open the Qdrant Edge folder"),
        ("RIPPLE_MODEL", "{tmp}/no-model", "is not a model folder"),
    ],
)
def test_serve_start_up_failures_are_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, value: str, words: str
) -> None:
    """Both fail before the engine starts, inside uvicorn's lifespan, which used to log Starlette's traceback
    and exit 3."""
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(setting, value.format(tmp=tmp_path))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    code, text = run("serve", "--port", str(port))
    assert code == 1 and "ripple: cannot start: " in text and words in text, text
    assert "Traceback" not in text, text
