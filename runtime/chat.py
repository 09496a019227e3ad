"""`ChatService`: one chat request through retrieval, rails, prompt and generation, as events.

    prepare():  validate limits -> input rails || (embed query -> search) -> retrieval rail -> pack prompt
    events():   generate -> output rails on windows of the stream -> TextEvent... FinishEvent

Input rails run concurrently with retrieval; a refusal cancels the retrieval. The retrieval rail
then cleans the chunks (hidden characters) and leaves out those carrying planted instructions. When the guard has
output rails, streamed text is held until its window has passed them, so nothing unchecked reaches
the client. Windows end only where the rails have settled the text (`_settled`: never inside a word, an
address, a run of digit groups or a private key block, nor between a sentence's end and its citations),
so a rail sees a secret whole and the stream is the unstreamed answer; they grow from
`stream_first_window_chars` to `stream_window_chars`. The first window's check starts as soon as its
first word may be complete and runs while the engine generates the next token; when that token starts
with whitespace, the word was whole and its verdict is already there (otherwise the check is dropped;
after two such checks the window waits for its word to end). Without output rails each delta passes straight through.
The HTTP framing lives in `runtime.api`, not here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from guards import grounding, masking
from guards.protocol import Guard, Verdict
from indexer.retriever import Retriever
from indexer.store import Filter, Mode, StoreError
from indexer.types import Passage
from runtime.errors import BadRequestError, ModelNotFoundError, NotReadyError
from runtime.generation import Generator, Message, SamplingOptions
from runtime.metrics import Metrics
from runtime.prompt import build_prompt, check_fits
from runtime.schemas import ChatCompletionRequest
from runtime.settings import Settings

REFUSAL = "I can't help with that request."


@dataclass(frozen=True)
class TextEvent:
    text: str


@dataclass(frozen=True)
class FinishEvent:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    citations: list[Passage]
    dropped_sources: int = 0
    flagged_sources: int = 0


@dataclass
class Prepared:
    conversation: list[Message]
    options: SamplingOptions
    passages: list[Passage] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    dropped: int = 0
    flagged: int = 0
    prompt_tokens: int | None = None
    refused: Verdict | None = None


class ChatService:
    def __init__(
        self, settings: Settings, generator: Generator, retriever: Retriever, guard: Guard | None, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.generator = generator
        self.retriever = retriever
        self.guard = guard
        self.metrics = metrics

    def sampling_options(self, request: ChatCompletionRequest) -> SamplingOptions:
        limit = self.settings.max_tokens_limit
        asked = request.requested_max_tokens()
        if asked is not None and asked > limit:
            name = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise BadRequestError(
                f"{name} {asked} is over this server's limit of {limit}: ask for at most {limit}", param=name
            )
        return SamplingOptions(
            max_tokens=asked or self.settings.default_max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=tuple(request.stop or ()),
            seed=request.seed,
            top_k=request.top_k,
            min_tokens=request.min_tokens,
            repetition_penalty=request.repetition_penalty,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            ignore_eos=request.ignore_eos,
        )

    async def retrieve(
        self, query: str, limit: int | None = None, *, mode: Mode | None = None, filter: Filter | None = None
    ) -> list[Passage]:
        self._require_store()
        return await self._search(query, limit, mode=mode, filter=filter)

    async def _search(
        self, query: str, limit: int | None = None, *, mode: Mode | None = None, filter: Filter | None = None
    ) -> list[Passage]:
        start = time.perf_counter()
        try:
            passages = await self.retriever.retrieve(query, limit or self.settings.top_k, mode=mode, filter=filter)
        except StoreError as exc:
            raise NotReadyError(f"retrieval failed: {exc}") from exc
        self.metrics.retrieval_seconds.observe(time.perf_counter() - start)
        return passages

    def _require_store(self) -> None:
        """A Qdrant server that stopped answering its health probe: 503 now, instead of waiting out the
        client's connect timeout; the store's probe notices when it answers again."""
        if not self.retriever.ready:
            self.metrics.rejected.labels("store").inc()
            raise NotReadyError("the vector store (Qdrant) is not answering: retry after the Retry-After delay")

    async def _check(self, rail: str, call: Awaitable[Verdict]) -> Verdict:
        """The check's verdict, its duration observed when it gives one (not when it fails or is dropped)."""
        start = time.perf_counter()
        verdict = await call
        self.metrics.rails_seconds.labels(rail).observe(time.perf_counter() - start)
        return verdict

    async def _check_output(self, guard: Guard, prepared: Prepared, answer: str) -> Verdict:
        return await self._check("output", guard.check_output(prepared.conversation, answer, prepared.passages))

    async def _retrieval_rail(self, passages: list[Passage]) -> tuple[list[Passage], int]:
        """Retrieved chunks are untrusted: the rail cleans each one or leaves it out (planted instructions).
        Its heading and source name go into the prompt too, so they are checked with it: a document whose
        title addressed the model got in through the label of a chunk under it."""
        assert self.guard is not None
        labels = list(dict.fromkeys(label for p in passages for label in (p.heading, p.source) if label.strip()))
        start = time.perf_counter()
        try:
            checked = await self.guard.check_retrieval([p.text for p in passages] + labels)
        finally:
            self.metrics.rails_seconds.labels("retrieval").observe(time.perf_counter() - start)
        verdicts: dict[str, str | None] = dict(zip(labels, checked[len(passages) :], strict=True))
        kept = []
        for p, text in zip(passages, checked[: len(passages)], strict=True):
            heading = verdicts.get(p.heading, p.heading)  # cleaned; None when flagged
            if text is not None and heading is not None and verdicts.get(p.source, p.source) is not None:
                kept.append(replace(p, text=text, heading=heading))
        flagged = len(passages) - len(kept)
        if flagged:
            self.metrics.flagged_sources.inc(flagged)
        return kept, flagged

    def check(self, request: ChatCompletionRequest) -> SamplingOptions:
        """What a request asks that this server refuses whatever its load: run before admission, so a
        wrong model or an over-limit max_tokens is a 404/400 and never a 429 the client would retry."""
        if request.model and request.model != self.generator.model_id:
            raise ModelNotFoundError(
                f"model {request.model!r} is not served here; use {self.generator.model_id!r} (see GET /v1/models)",
                param="model",
            )
        self._require_store()  # a store that stopped answering: 503 before admission, counted once
        options = self.sampling_options(request)
        if options.min_tokens is not None and options.min_tokens > options.max_tokens:
            raise BadRequestError(
                f"min_tokens {options.min_tokens} is more than the {options.max_tokens} tokens asked for "
                "(max_tokens, or this server's default): lower min_tokens or raise max_tokens",
                param="min_tokens",
            )
        return options

    async def prepare(self, request: ChatCompletionRequest, options: SamplingOptions | None = None) -> Prepared:
        """`options`: what `check` made of the request, when the caller ran it already (before admission)."""
        options = options or self.check(request)
        conversation: list[Message] = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in request.messages
        ]
        prepared = Prepared(conversation=conversation, options=options)
        max_len = getattr(self.generator, "max_model_len", None)
        budget = (max_len - options.max_tokens) if max_len else 1 << 30
        await check_fits(conversation, count_tokens=self.generator.count_prompt_tokens, budget=budget)
        wanted = request.retrieval
        retrieval = asyncio.create_task(
            self._search(
                conversation[-1]["content"],
                wanted.top_k if wanted else None,
                mode=wanted.mode if wanted else None,
                filter=wanted.filter if wanted else None,
            )
        )
        try:
            if self.guard is not None:
                verdict = await self._check("input", self.guard.check_input(conversation))
                if not verdict.allowed:
                    prepared.refused = verdict
                    return prepared
                if verdict.content is not None:  # a rail rewrote the message (masking, say)
                    conversation[-1] = {"role": "user", "content": verdict.content}
            passages = await retrieval
        finally:
            retrieval.cancel()
            if retrieval.done() and not retrieval.cancelled():
                retrieval.exception()  # read, so a refusal does not leave a failed search to be logged
        if self.guard is not None and passages:
            passages, prepared.flagged = await self._retrieval_rail(passages)
        prompt = await build_prompt(
            self.settings.system_prompt,
            conversation,
            passages,
            count_tokens=self.generator.count_prompt_tokens,
            budget=budget,
        )
        prepared.passages, prepared.messages = prompt.passages, prompt.messages
        prepared.dropped, prepared.prompt_tokens = prompt.dropped, prompt.prompt_tokens
        return prepared

    async def events(
        self,
        prepared: Prepared,
        request_id: str,
        *,
        stream: bool,
        on_first_token: Callable[[], None] | None = None,
    ) -> AsyncGenerator[TextEvent | FinishEvent, None]:
        """The answer as events. `on_first_token` runs when the engine's first text arrives, before any
        window holds it (admission counts a request as waiting until then)."""
        if prepared.refused is not None:
            self.metrics.finish.labels("content_filter").inc()
            yield TextEvent(REFUSAL)
            yield FinishEvent("content_filter", 0, 0, [])
            return
        guard = self.guard if self.guard is not None and self.guard.has_output_rails else None
        # Windows start small so the first words leave quickly, then double up to the configured size,
        # keeping the number of rail calls per answer low.
        window = self.settings.stream_first_window_chars if stream else 1 << 30
        # `released` is the model's text that passed the rails; `sent` is what the client got of it,
        # which differs when a rail masked something (a rail sees the model's text, cumulatively).
        pending, released, sent = "", "", ""
        finish, prompt_tokens, completion_tokens = "stop", prepared.prompt_tokens or 0, 0
        # The first window's check, started on text that may be one whole word (`early_text`).
        early: asyncio.Task[Verdict] | None = None
        early_checks = _EARLY_CHECKS if self.settings.stream_early_check else 0
        early_text = ""
        largest = self.settings.stream_window_chars
        held_since: float | None = None  # a stream with output rails: when the engine's first text came
        if not self.generator.ready:
            raise NotReadyError("the generator is not ready")
        try:
            async with aclosing(self.generator.generate(request_id, prepared.messages, prepared.options)) as deltas:
                async for delta in deltas:
                    prompt_tokens = delta.prompt_tokens or prompt_tokens
                    completion_tokens = delta.completion_tokens or completion_tokens
                    if delta.finish_reason is not None:
                        finish = delta.finish_reason
                    pending += delta.text
                    if on_first_token is not None and delta.text:
                        on_first_token()
                        on_first_token = None
                    if held_since is None and stream and guard is not None and pending:
                        held_since = time.perf_counter()
                    if guard is None:
                        if pending:
                            yield TextEvent(pending)
                            released, pending = released + pending, ""
                        continue
                    cut, check = 0, None
                    if early is not None and len(pending) > len(early_text):
                        # A window may end where the early check's text does now (the word ended): its
                        # verdict is the window's. Otherwise the word went on and that verdict is of no use.
                        if _settled(released, pending, len(early_text)) == len(early_text):
                            cut, check = len(early_text), early
                        else:
                            _drop(early)
                        early = None
                    if not cut and len(pending) >= window:
                        cut = _window_cut(pending, _settled(released, pending))
                        if (
                            not cut
                            and early is None
                            and early_checks
                            and not released
                            and _may_end_a_window(released, pending)
                        ):
                            # One word so far: check it now, while the engine generates the next token.
                            early_checks -= 1
                            early_text = pending
                            early = asyncio.create_task(self._check_output(guard, prepared, pending))
                    if not cut:
                        continue  # one word, still growing
                    piece = pending[:cut]
                    verdict = await (check or self._check_output(guard, prepared, released + piece))
                    out = _passed(verdict, sent, piece)
                    if out is None:
                        finish, pending = "content_filter", ""
                        break
                    if out:
                        if held_since is not None and not sent:
                            self.metrics.first_window_seconds.observe(time.perf_counter() - held_since)
                        yield TextEvent(out)
                    released, sent, pending = released + piece, sent + out, pending[cut:]
                    window = min(window * 2, largest)
        except BaseException:
            if early is not None:
                _drop(early)
            raise
        if guard is not None and finish != "content_filter" and (pending or not released):
            # An early check still in flight was started on exactly the text left (a one-word answer):
            # one is only ever in flight while nothing was released and `pending` has not grown.
            verdict = await (early or self._check_output(guard, prepared, released + pending))
            out = _passed(verdict, sent, pending)
            if out is None:
                finish, pending = "content_filter", ""
            else:
                pending = out
        if finish == "content_filter" and not released:
            pending = REFUSAL
        if pending:
            if held_since is not None and not sent:
                self.metrics.first_window_seconds.observe(time.perf_counter() - held_since)
            yield TextEvent(pending)
        self.metrics.finish.labels(finish).inc()
        yield FinishEvent(
            finish, prompt_tokens, completion_tokens, prepared.passages, prepared.dropped, prepared.flagged
        )


_EARLY_CHECKS = 2
"""Early checks per answer: one on the first token, one more when that token turned out to be part of a
longer word; after that the word's check waits for it to end (each dropped check is wasted work)."""


_CONTEXT = 64


def _settled(released: str, pending: str, end: int | None = None) -> int:
    """How much of `pending` the output rails have settled: Ripple's rails rewrite the answer so far
    (masking, the groundedness flag), and a window may only end where no text to come can change what
    they make of the text before it (not inside an address, a card number or a key that may still be
    arriving, nor between a sentence's end and citations that may follow it). Sent text is never taken
    back, so this is what keeps a streamed answer the same as the unstreamed one, secrets masked whole.
    `end`: the latest cut wanted, in `pending`."""
    # What was released is settled: the rails only look a few characters back into it (a word boundary,
    # a run of digit groups going on), so a short tail stands for it rather than a copy per token.
    tail = released[-_CONTEXT:]
    text = tail + pending
    start = len(tail)
    cut, before = masking.settled(text, start), -1
    if end is not None:
        cut = min(cut, start + end)
    while cut != before:  # each step moves the cut back, out of what one rail or the other would change
        before = cut
        cut = masking.run_start(text, grounding.settled(text, cut, start), start)
    return cut - start


def _may_end_a_window(released: str, pending: str) -> bool:
    """Whether whitespace right after `pending` would let a window end after it."""
    return _settled(released, pending + " ", len(pending)) == len(pending)


def _drop(task: asyncio.Task[Verdict]) -> None:
    """Forget an early check whose text did not end a word: cancel it, or read how it ended."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _passed(verdict: Verdict, sent: str, piece: str) -> str | None:
    """What of `piece` may go to the client after `sent`: the piece itself, its masked form when a rail
    rewrote the answer, or None when the rails blocked it (or rewrote text the client already has)."""
    if not verdict.allowed:
        return None
    if verdict.content is None:
        return piece
    return verdict.content[len(sent) :] if verdict.content.startswith(sent) else None


def _window_cut(text: str, settled: int) -> int:
    """Where to cut a window of `text`: at the end of what the rails have settled (`settled`), 0 for not
    yet. Never after blanks alone (a window of blanks would cost a check for nothing)."""
    blanks = len(text) - len(text.lstrip())
    return settled if settled > blanks else 0
