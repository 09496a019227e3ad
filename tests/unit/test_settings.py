"""Settings: environment, TOML file, and refusals that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.settings import Settings, describe_errors, unknown_variables


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_PORT", "9001")
    monkeypatch.setenv("RIPPLE_QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("RIPPLE_UPSTREAM_URLS", "http://a:8000/v1/, http://b:8000/v1")
    s = Settings()
    assert s.port == 9001 and s.qdrant_url == "http://qdrant:6333"
    assert s.upstream_urls == ["http://a:8000/v1", "http://b:8000/v1"]


def test_toml_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ripple.toml"
    toml.write_text('port = 7000\ncollection = "handbook"\n')
    monkeypatch.setenv("RIPPLE_CONFIG", str(toml))
    monkeypatch.setenv("RIPPLE_PORT", "7001")
    s = Settings()
    assert s.collection == "handbook" and s.port == 7001


def test_a_missing_toml_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_CONFIG", "/nonexistent/ripple.toml")
    with pytest.raises(ValueError, match="RIPPLE_CONFIG"):
        Settings()


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"RIPPLE_DEFAULT_MAX_TOKENS": "2000"}, "RIPPLE_DEFAULT_MAX_TOKENS"),
        ({"RIPPLE_MAX_TOKENS_LIMIT": "5000"}, "RIPPLE_MAX_MODEL_LEN"),
        ({"RIPPLE_UPSTREAM_URLS": "vllm:8000"}, "http://"),
        ({"RIPPLE_GUARDS_CONFIG": "/nonexistent"}, "RIPPLE_GUARDS_CONFIG"),
        ({"RIPPLE_PORT": "70000"}, "port"),
        ({"RIPPLE_DTYPE": "int3"}, "dtype"),
        ({"RIPPLE_SPECULATIVE_NGRAM_TOKENS": "4", "RIPPLE_UPSTREAM_URLS": "http://a:8000/v1"}, "--speculative-config"),
        ({"RIPPLE_SPECULATIVE_NGRAM_TOKENS": "-1"}, "speculative_ngram_tokens"),
        ({"RIPPLE_ENGINE_MAX_BATCHED_TOKENS": "512", "RIPPLE_UPSTREAM_URLS": "http://a:8000/v1"}, "--max-num-batched"),
        ({"RIPPLE_ENGINE_MAX_BATCHED_TOKENS": "64"}, "engine_max_batched_tokens"),
    ],
)
def test_bad_settings_name_what_to_change(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match=expected):
        Settings()


def test_unknown_toml_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ripple.toml"
    toml.write_text("prot = 1\n")
    monkeypatch.setenv("RIPPLE_CONFIG", str(toml))
    with pytest.raises(ValidationError, match="prot"):
        Settings()


def test_the_report_names_each_variable_its_value_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "ripple.toml"
    toml.write_text("prot = 1\nqdrant_api_key = 5\n")
    monkeypatch.setenv("RIPPLE_CONFIG", str(toml))
    monkeypatch.setenv("RIPPLE_PORT", "70000")
    monkeypatch.setenv("RIPPLE_UPSTREAM_URLS", "http://a:8000/v1,vllm:8000")
    with pytest.raises(ValidationError) as refused:
        Settings()
    lines = describe_errors(refused.value)
    assert "RIPPLE_PORT (port) = '70000': Input should be less than or equal to 65535" in lines
    assert any(line.startswith("RIPPLE_UPSTREAM_URLS (upstream_urls) = ") and "'vllm:8000'" in line for line in lines)
    assert "prot (in the RIPPLE_CONFIG file) is not a setting: see docs/configuration.md" in lines
    assert any(line.startswith("RIPPLE_QDRANT_API_KEY (qdrant_api_key): ") for line in lines), lines
    assert not any("= 5" in line for line in lines), "a secret's value is never printed"
    monkeypatch.delenv("RIPPLE_CONFIG")
    monkeypatch.delenv("RIPPLE_PORT")
    monkeypatch.delenv("RIPPLE_UPSTREAM_URLS")
    monkeypatch.setenv("RIPPLE_DEFAULT_MAX_TOKENS", "2000")
    with pytest.raises(ValidationError) as refused:
        Settings()
    (line,) = describe_errors(refused.value)
    assert line.startswith("RIPPLE_DEFAULT_MAX_TOKENS (2000) exceeds RIPPLE_MAX_TOKENS_LIMIT"), line


def test_credentials_in_a_bad_upstream_url_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry without its scheme is refused with the value given, which carried its password."""
    monkeypatch.setenv("RIPPLE_UPSTREAM_URLS", "svc:s3cr3t@gpu-1:8000/v1,http://u:pw9@gpu-2:8000/v1")
    with pytest.raises(ValidationError) as refused:
        Settings()
    (line,) = describe_errors(refused.value)
    assert "gpu-1:8000/v1" in line and "must start with http://" in line, line
    assert "s3cr3t" not in line and "pw9" not in line and "svc" not in line, line


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIPPLE_QDRANT_API_KEY", "hunter2")
    s = Settings()
    assert "hunter2" not in repr(s) and s.qdrant_api_key is not None
    assert s.qdrant_api_key.get_secret_value() == "hunter2"


def test_the_engine_worker_computes_on_both_cores_of_a_two_core_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert Settings().engine_cpu_reserved() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert Settings().engine_cpu_reserved() is None, "vLLM's own choice on bigger machines"
    monkeypatch.setenv("RIPPLE_ENGINE_CPU_RESERVED_CORES", "2")
    assert Settings().engine_cpu_reserved() == 2
    monkeypatch.setenv("RIPPLE_ENGINE_CPU_RESERVED_CORES", "-1")
    with pytest.raises(ValidationError, match="engine_cpu_reserved_cores"):
        Settings()


def _sentence_transformers_folder(root: Path, pooling: str) -> Path:
    """The files `exportable` reads of a sentence-transformers folder (no weights: nothing is loaded)."""
    import json

    (root / "1_Pooling").mkdir(parents=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    pooling_config = {"word_embedding_dimension": 384, f"pooling_mode_{pooling}": True}
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    (root / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    (root / "tokenizer.json").write_text("{}")
    return root


def test_the_embed_backend_auto_is_onnx_on_the_cpu_for_a_model_it_can_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from runtime.components import embed_backend

    pytest.importorskip("onnxruntime", reason="the `onnx` extra is not installed (pip install -e '.[onnx]')")
    mean = str(_sentence_transformers_folder(tmp_path / "mean", "mean_tokens"))
    cls = str(_sentence_transformers_folder(tmp_path / "cls", "cls_token"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Settings().embed_backend == "auto"
    assert embed_backend(Settings(embed_model=mean)) == "onnx"
    assert embed_backend(Settings(embed_model=mean, embed_device="cpu")) == "onnx"
    assert embed_backend(Settings(embed_model=cls)) == "torch"  # only mean pooling is exported
    assert embed_backend(Settings(embed_model="sentence-transformers/all-MiniLM-L6-v2")) == "torch"  # a hub id
    assert embed_backend(Settings(embed_model=mean, embed_device="cuda")) == "torch"
    assert embed_backend(Settings(embed_model=mean, embed_backend="torch")) == "torch"
    assert embed_backend(Settings(embed_model=cls, embed_backend="onnx-int8")) == "onnx-int8"  # as set
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # sentence-transformers would pick the GPU
    assert embed_backend(Settings(embed_model=mean)) == "torch"


def test_a_misspelt_variable_is_named_with_the_setting_it_likely_meant() -> None:
    environ = {"RIPPLE_MAX_TOKEN_LIMIT": "64", "RIPPLE_PORT": "1", "RIPPLE_CONFIG": "x", "RIPPLE_ZZZ": "1", "PATH": "/"}
    assert unknown_variables(environ) == [
        "RIPPLE_MAX_TOKEN_LIMIT is not a Ripple setting and is ignored: did you mean RIPPLE_MAX_TOKENS_LIMIT?",
        "RIPPLE_ZZZ is not a Ripple setting and is ignored: see docs/configuration.md",
    ]
