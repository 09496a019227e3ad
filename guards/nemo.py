"""`NemoGuard`: the Guard role served by NeMo Guardrails' `LLMRails.check_async`.

The runtime drives generation and streaming itself and asks NeMo only for verdicts (input rails
before generation, output rails on the answer), so NeMo never generates the answer. The config
folder is a normal NeMo config; its `main` model is the runtime's engine via the `ripple` provider.

Retrieval rails: NeMo 0.24's `check_async` runs input and output rails only (its retrieval rails run
inside its own generation flow, which Ripple does not use). So when the config lists the flow
`ripple check retrieval`, Ripple runs that flow's action through the same `LLMRails`'s action
dispatcher, once per request with all retrieved chunks. Other retrieval flows are reported at start
and not run. Dialog rails are not run.

Ripple's own flows (guards/config/rails.co) each run one action and act on its result. When every
input (or output) flow of the loaded config is one of them and the config is otherwise the packaged
one's kind (see `direct_flows`), a check runs those actions through the `LLMRails`'s action
dispatcher in the configured order, as their flows would, without a Colang run: NeMo's event loop
costs about 10 ms per check on these cores, more than the actions. Any other or edited flow sends
every check of that rail type through `check_async`. `tests/unit/test_guards.py` checks that both
paths give the same verdicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guards import DEFAULT_CONFIG
from guards.actions import ACTIONS, SOURCES, grounding_actions
from guards.grounding import EmbedFn, Groundedness
from guards.injection import default_classifier
from guards.llm import ChatFn, bind_provider
from guards.protocol import Message, Verdict, user_written
from indexer.types import Passage

logger = logging.getLogger(__name__)

RETRIEVAL_FLOW = "ripple check retrieval"

DIRECT_FLOWS: dict[str, tuple[str, bool]] = {
    "ripple check input": ("ripple_check_input", False),
    "ripple check output": ("ripple_check_output", False),
    "ripple check groundedness": ("ripple_check_groundedness", False),
    "ripple mask output": ("ripple_mask_output", True),
    "ripple flag groundedness": ("ripple_flag_groundedness", True),
}
"""Ripple's flows that run one action: flow -> (action, rewrites the bot message). A checking flow
blocks when its action returns false; a rewriting one sets `$bot_message` to what its action returns."""


def _without_source(value: Any) -> Any:
    """A parsed flow element without where it was written (file, line), so flows compare by meaning."""
    if isinstance(value, dict):
        return {k: _without_source(v) for k, v in value.items() if k not in ("_source_mapping", "source_code")}
    if isinstance(value, list):
        return [_without_source(v) for v in value]
    return value


def _flows(config: Any) -> list[tuple[str, str]]:
    return [(str(f["id"]), json.dumps(_without_source(f), sort_keys=True, default=str)) for f in config.flows]


def direct_flows(config: Any) -> dict[str, list[str] | None]:
    """Per rail type ("input", "output"), its configured flows when they may run directly, else None.
    They may when each is one of DIRECT_FLOWS, the rails of that type do not run in parallel, no action
    server or tracing is configured, and the config defines no flow that the packaged one does not, each
    once and parsed the same (an edit, even of indentation, or an extra flow that could hook NeMo's
    events, sends every check through `check_async`)."""
    from nemoguardrails import RailsConfig

    loaded = _flows(config)
    as_packaged = len({name for name, _ in loaded}) == len(loaded) and set(loaded) <= set(
        _flows(RailsConfig.from_path(str(DEFAULT_CONFIG)))
    )
    plain = as_packaged and not config.tracing.enabled and not config.actions_server_url
    direct: dict[str, list[str] | None] = {}
    for kind in ("input", "output"):
        rails = getattr(config.rails, kind)
        names = list(rails.flows)
        ok = plain and names and not rails.parallel and all(name in DIRECT_FLOWS for name in names)
        direct[kind] = names if ok else None
    return direct


__all__ = ["DEFAULT_CONFIG", "NemoGuard"]


class _NoHistory(dict[str, list[dict[str, object]]]):
    """Stands in for `LLMRails.events_history_cache`, which NeMo (Colang 1.0, no explicit state) fills
    with every conversation's events, keyed by its messages, and never empties: one entry per check,
    about 36 KiB each here, so the API process grew without bound under load. Each check here is
    self-contained (the runtime passes the messages it wants judged), so nothing is worth keeping."""

    def __setitem__(self, key: str, value: list[dict[str, object]]) -> None:
        pass


class NemoGuard:
    def __init__(
        self,
        config_dir: Path,
        chat: ChatFn,
        *,
        model_name: str = "ripple",
        embed: EmbedFn | None = None,
        direct: bool = True,
    ) -> None:
        """`direct=False` sends every check through `check_async`, even for Ripple's own flows."""
        self._config_dir = config_dir
        self._embed = embed
        self._chat = chat
        self._model_name = model_name
        self._rails = None
        self._has_input = False
        self._has_output = False
        self._has_retrieval = False
        self._grounded: list[str] = []
        self._allow_direct = direct
        self._direct: dict[str, list[str] | None] = {}

    async def start(self) -> None:
        # NeMo Guardrails posts a usage report to NVIDIA when its rails are built, and again every 10
        # minutes, and appends each to ~/.config/nemoguardrails/usage_stats.json, unless told not to.
        # A server's traffic is its operator's choice: off unless NEMO_GUARDRAILS_NO_USAGE_STATS=0 is set.
        os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
        from nemoguardrails import LLMRails, RailsConfig

        if not (self._config_dir / "config.yml").is_file():
            raise FileNotFoundError(
                f"no NeMo config at {self._config_dir}/config.yml: set RIPPLE_GUARDS_CONFIG to a NeMo "
                "Guardrails config folder (see guards/config)"
            )
        config = RailsConfig.from_path(str(self._config_dir))
        if self._allow_direct:  # before LLMRails, which adds NeMo's own flows to `config.flows`
            self._direct = direct_flows(config)
        for model in config.models:
            if model.engine == "ripple":
                model.model = self._model_name
        bind_provider(self._chat)
        # The input rail's classifier loads here, not on the first request (a missing artefact fails start-up).
        await asyncio.to_thread(default_classifier)
        rails = LLMRails(config)
        rails.events_history_cache = _NoHistory()
        for name, fn in ACTIONS.items():
            rails.register_action(fn, name=name)
        # Without an embedder (`ripple eval guards` runs input rails only) an output check with a
        # groundedness rail is an error (see check_output), not a silent pass.
        self._grounded = [f for f in config.rails.output.flows if "groundedness" in f]
        if self._embed is not None:
            for name, fn in grounding_actions(Groundedness(self._embed)).items():
                rails.register_action(fn, name=name)
        self._has_input = bool(config.rails.input.flows)
        self._has_output = bool(config.rails.output.flows)
        retrieval = list(config.rails.retrieval.flows)
        self._has_retrieval = RETRIEVAL_FLOW in retrieval
        if unsupported := [f for f in retrieval if f != RETRIEVAL_FLOW]:
            logger.warning("retrieval rails other than %r are not run by Ripple: %s", RETRIEVAL_FLOW, unsupported)
        self._rails = rails
        logger.info(
            "rails ready: input=%s retrieval=%s output=%s; run by the action dispatcher: %s",
            config.rails.input.flows,
            retrieval,
            config.rails.output.flows,
            self.direct_rail_types or "none",
        )

    async def close(self) -> None:
        self._rails = None

    @property
    def ready(self) -> bool:
        return self._rails is not None

    @property
    def direct_rail_types(self) -> list[str]:
        """The rail types ("input", "output") whose checks run Ripple's actions through the dispatcher."""
        return [kind for kind, flows in self._direct.items() if flows]

    @property
    def has_output_rails(self) -> bool:
        return self._has_output

    async def check_input(self, messages: Sequence[Message]) -> Verdict:
        if not self._has_input:
            return Verdict.ok()
        # NeMo's input rails read the last user message; the earlier ones are checked one by one beside it.
        earlier = [m for m in dict.fromkeys(user_written(messages[:-1])) if m != messages[-1]["content"]]
        if not earlier:
            return await self._check([dict(m) for m in messages], "input")
        verdicts = await asyncio.gather(
            self._check([dict(m) for m in messages], "input"),
            *(self._check([{"role": "user", "content": text}], "input") for text in earlier),
        )
        return next((v for v in verdicts if not v.allowed), verdicts[0])

    async def check_output(
        self,
        messages: Sequence[Message],
        answer: str,
        sources: Sequence[Passage] = (),
    ) -> Verdict:
        if not self._has_output:
            return Verdict.ok()
        if self._grounded and self._embed is None:
            raise RuntimeError(f"the output rails {self._grounded} need an embedder: build NemoGuard with embed=...")
        token = SOURCES.set(sources)
        try:
            return await self._check([*(dict(m) for m in messages), {"role": "assistant", "content": answer}], "output")
        finally:
            SOURCES.reset(token)

    async def check_retrieval(self, chunks: Sequence[str]) -> list[str | None]:
        if not self._has_retrieval or not chunks:
            return list(chunks)
        if self._rails is None:
            raise RuntimeError("NemoGuard.start() was not called")
        result, status = await self._rails.runtime.action_dispatcher.execute_action(
            "ripple_check_retrieval", {"chunks": list(chunks)}
        )
        if status != "success" or not isinstance(result, list) or len(result) != len(chunks):
            raise RuntimeError(f"the retrieval rail failed ({status})")
        return result

    async def _check(self, messages: list[dict[str, Any]], kind: str) -> Verdict:
        if self._rails is None:
            raise RuntimeError("NemoGuard.start() was not called")
        if flows := self._direct.get(kind):
            return await self._run_direct(messages, kind, flows)
        return await self._check_async(messages, kind)

    async def _check_async(self, messages: list[dict[str, Any]], kind: str) -> Verdict:
        from nemoguardrails.rails.llm.options import RailStatus, RailType

        assert self._rails is not None
        result = await self._rails.check_async(messages, rail_types=[RailType(kind)])
        if result.status == RailStatus.BLOCKED:
            return Verdict(allowed=False, rail=result.rail)
        if result.status == RailStatus.MODIFIED:
            return Verdict(allowed=True, rail=result.rail, content=result.content)
        return Verdict.ok()

    async def _run_direct(self, messages: list[dict[str, Any]], kind: str, flows: list[str]) -> Verdict:
        """What `check_async` answers for `flows`, each of which runs one action (DIRECT_FLOWS)."""
        assert self._rails is not None
        last = {role: next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == role), "")
                for role in ("user", "assistant")}  # fmt: skip
        context: dict[str, Any] = {"user_message": last["user"]}
        if kind == "output":
            context["bot_message"] = last["assistant"]
        for flow in flows:
            action, rewrites = DIRECT_FLOWS[flow]
            result, status = await self._rails.runtime.action_dispatcher.execute_action(
                action, {"context": dict(context)}
            )
            if status != "success":  # the dispatcher logged why; a rail that cannot judge blocks, as in NeMo
                return Verdict(allowed=False, rail=flow)
            if rewrites:
                context["bot_message"] = result
            elif not result:
                return Verdict(allowed=False, rail=flow)
        if kind == "output" and context["bot_message"] != last["assistant"]:
            return Verdict(allowed=True, content=context["bot_message"])
        return Verdict.ok()
