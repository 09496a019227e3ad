"""Ripple guards: NeMo Guardrails rails for input and output, plus the local checks they call.

`guards` imports nothing of `runtime` or `indexer`: the runtime hands it a chat function
(see `guards.llm`) so that the rails' LLM calls reach the same in-process engine.
"""

from pathlib import Path

from guards.protocol import Guard, Verdict

DEFAULT_CONFIG = Path(__file__).parent / "config"

__all__ = ["DEFAULT_CONFIG", "Guard", "Verdict"]
