"""`FakeGuard`: the Guard role for tests, blocking messages that contain given words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from guards.protocol import Message, Verdict, user_written
from indexer.types import Passage


@dataclass
class FakeGuard:
    blocked_input: tuple[str, ...] = ("ignore all previous instructions",)
    blocked_output: tuple[str, ...] = ("SECRET",)
    output_checks: list[str] = field(default_factory=list)
    ready: bool = False

    async def start(self) -> None:
        self.ready = True

    async def close(self) -> None:
        self.ready = False

    @property
    def has_output_rails(self) -> bool:
        return bool(self.blocked_output)

    async def check_input(self, messages: Sequence[Message]) -> Verdict:
        for message in user_written(messages):
            if any(word.lower() in message.lower() for word in self.blocked_input):
                return Verdict(allowed=False, rail="fake input")
        return Verdict.ok()

    async def check_output(
        self,
        messages: Sequence[Message],
        answer: str,
        sources: Sequence[Passage] = (),
    ) -> Verdict:
        self.output_checks.append(answer)
        if any(word in answer for word in self.blocked_output):
            return Verdict(allowed=False, rail="fake output")
        return Verdict.ok()

    async def check_retrieval(self, chunks: Sequence[str]) -> list[str | None]:
        return [None if any(w.lower() in c.lower() for w in self.blocked_input) else c for c in chunks]
