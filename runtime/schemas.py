"""OpenAI chat-completions wire format at the HTTP edge (pydantic), plus Ripple's `citations`.

Requests accept what the OpenAI spec and vLLM's OpenAI server accept for text chat, including
vLLM's sampling extras (`ignore_eos`, `top_k`, `min_tokens`, `repetition_penalty`) so that
`vllm bench serve --backend openai-chat` runs unmodified. Anything else is refused with a 400 that
names the fields, rather than silently ignored. Tools, images, audio and n > 1 are not supported.
An explicit null is "not given" (`RequestModel`), as in OpenAI's API, so that a message read back from a response
(`refusal: null`, `tool_calls: null`...) and clients that send every parameter pass.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from runtime.errors import BadRequestError, UnsupportedFieldError

# Fields a client may send that change nothing for a text-only, single-choice server.
_IGNORED = {
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prediction",
}
# Fields refused in general but harmless at these values (what a client sends to mean "off").
_HARMLESS = {"logprobs": False, "top_logprobs": 0, "response_format": {"type": "text"}}
# vLLM hands these integers to C++ as 64-bit: a larger one fails in the engine, not as a 400.
_INT64 = 2**63 - 1


def _is_harmless(value: Any, harmless: Any) -> bool:
    """`value` equals `harmless` once the null entries of its objects are dropped. Walks only as deep as
    `harmless` (an object or a scalar), never the client's JSON: a value nested hundreds of levels deep
    is simply not harmless, and is refused by name, not a RecursionError."""
    if not isinstance(harmless, dict):
        return bool(value == harmless)
    if not isinstance(value, dict) or {k for k, v in value.items() if v is not None} != harmless.keys():
        return False
    return all(_is_harmless(value[k], v) for k, v in harmless.items())


class RequestModel(BaseModel):
    """A request object: unknown fields refused, and an explicit null read as "not given", as OpenAI
    reads it (clients send nulls; a message read back from a response carries `refusal: null`,
    `tool_calls: null`...). Fields in `keep_nulls` keep theirs, so that a null there is refused."""

    model_config = ConfigDict(extra="forbid")
    keep_nulls: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None or k in cls.keep_nulls}
        return value


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class ChatMessage(RequestModel):
    keep_nulls = frozenset({"content"})
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_assistant_turn(cls, value: Any) -> Any:
        # An assistant turn read back from a streamed empty answer has no content: it said nothing.
        if isinstance(value, dict) and value.get("role") == "assistant" and value.get("content", "") is None:
            value = {**value, "content": ""}
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(RequestModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False
    # OpenAI pads chunks with random text against length side channels when this is on; Ripple does
    # not pad, and accepts the field so that clients that set it work.
    include_obfuscation: bool = False


# Strict: a boolean is no integer here, nor a numeric string an integer (`_check_filter` says so in words,
# and bounds integers to the 64 bits Qdrant stores; no payload field Ripple writes is boolean).
FilterValue = StrictStr | StrictInt | list[StrictStr] | list[StrictInt]


# A payload field, or a nested one by its dotted path (`chunker.version`): every key Ripple writes is an
# identifier (none has a '-'). Anything else (brackets, quotes, blanks, control characters) Qdrant reads as
# JSON-path syntax or fails to parse: a 500 from Qdrant Edge, a retried 503 from local mode, not a 400.
_PAYLOAD_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _check_filter(value: Any) -> Any:
    """Refuse, in words, what Qdrant would fail on or match differently per store: a key that is not a
    payload field's path, a boolean, an integer past 64 bits, a list mixing strings and integers."""
    if not isinstance(value, dict):
        return value
    for key, wanted in value.items():
        if not isinstance(key, str) or not _PAYLOAD_KEY.fullmatch(key):
            raise ValueError(
                f"{key!r} is not a payload field name: use ASCII letters, digits and '_', not starting with a digit, "
                "and '.' between the parts of a nested field, e.g. 'tenant' or 'chunker.version' (the indexing "
                "page lists the fields)"
            )
        values = wanted if isinstance(wanted, list) else [wanted]
        kinds = {type(v) for v in values}
        if not kinds <= {str, int} or len(kinds) > 1 or any(isinstance(v, int) and abs(v) > _INT64 for v in values):
            raise ValueError(
                f"{key}: {wanted!r} is not a string, a 64-bit integer, or a list of strings or of integers "
                "(no payload field is boolean)"
            )
    return value


class RetrievalOptions(RequestModel):
    """Ripple's extension: how to retrieve for this request (all optional)."""

    mode: Literal["dense", "sparse", "hybrid"] | None = None
    filter: dict[str, FilterValue] | None = Field(
        None, description='Payload key -> value, or list of accepted values; e.g. {"tenant": "acme"}.'
    )
    top_k: StrictInt | None = Field(None, ge=1, le=50)

    _filter = field_validator("filter", mode="before")(_check_filter)


class ChatCompletionRequest(RequestModel):
    # Unknown fields are let in here only to be refused in one message, or ignored (`_IGNORED`).
    model_config = ConfigDict(extra="allow")
    keep_nulls = frozenset({"messages"})

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-_INT64 - 1, le=_INT64)
    n: int = 1
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    # vLLM's sampling extras
    ignore_eos: bool = False
    top_k: int | None = Field(None, ge=-1, le=_INT64)  # 0 and -1: no top-k, as in vLLM
    min_tokens: int | None = Field(None, ge=0, le=_INT64)
    repetition_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    # Ripple's extension
    retrieval: RetrievalOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _harmless(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in _HARMLESS or not _is_harmless(v, _HARMLESS[k])}
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if isinstance(value, str):
            value = [value]
        if value is not None and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if value is not None and "" in value:
            raise ValueError("a stop sequence cannot be empty")
        return value

    @model_validator(mode="after")
    def _refuse_unknown(self) -> ChatCompletionRequest:
        unknown = sorted(k for k in (self.model_extra or {}) if k not in _IGNORED)
        if unknown:
            raise UnsupportedFieldError(
                f"unsupported field(s): {', '.join(unknown)}. Ripple serves text chat with one choice; "
                "remove these fields",
                param=unknown[0],
            )
        if self.n != 1:
            raise UnsupportedFieldError("n must be 1: Ripple returns one choice per request", param="n")
        if self.stream_options is not None and self.stream_options.model_fields_set and not self.stream:
            raise BadRequestError(
                "stream_options is only allowed with stream: true; remove it or stream", param="stream_options"
            )
        if self.messages[-1].role != "user":
            raise BadRequestError("the last message must be from the user", param="messages")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Citation(BaseModel):
    index: int
    source: str
    chunk_id: str
    doc_id: str
    heading: str
    score: float
    start: int
    end: int
    text: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RetrieveRequest(RequestModel):
    query: str = Field(min_length=1, max_length=4096)
    top_k: StrictInt | None = Field(None, ge=1, le=100)
    mode: Literal["dense", "sparse", "hybrid"] | None = None
    filter: dict[str, FilterValue] | None = None

    _filter = field_validator("filter", mode="before")(_check_filter)


def chunk_payload(
    *, completion_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
