"""SSE framing and the OpenAI request schema."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from runtime import sse
from runtime.errors import BadRequestError, UnsupportedFieldError
from runtime.schemas import ChatCompletionRequest


def test_event_is_one_data_line_and_a_blank_line() -> None:
    frame = sse.event({"a": "line\nbreak", "b": "é"})
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 2, "a newline inside the payload must be escaped, not framed"
    assert json.loads(frame[6:-2]) == {"a": "line\nbreak", "b": "é"}
    assert sse.DONE == b"data: [DONE]\n\n"


def parse(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_stop_string_becomes_a_list_and_max_completion_tokens_wins() -> None:
    r = parse(stop="END", max_tokens=5, max_completion_tokens=7)
    assert r.stop == ["END"] and r.requested_max_tokens() == 7


def test_ignored_openai_fields_are_accepted() -> None:
    assert parse(user="abc", metadata={"k": "v"}).requested_max_tokens() is None


@pytest.mark.parametrize("field", ["logprobs", "logit_bias", "tools", "response_format", "chat_template"])
def test_unsupported_fields_are_named(field: str) -> None:
    with pytest.raises(UnsupportedFieldError, match=field):
        parse(**{field: True})


def test_last_message_must_be_the_user() -> None:
    with pytest.raises(BadRequestError, match="last message"):
        ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        )


def test_non_text_parts_are_rejected() -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
        )


def test_sampling_ranges_are_checked() -> None:
    for bad in ({"temperature": 3}, {"top_p": 0}, {"max_tokens": 0}, {"stop": ["a", "b", "c", "d", "e"]}):
        with pytest.raises(ValidationError):
            parse(**bad)
