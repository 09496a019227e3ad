"""Unit-test wiring: the app built from fakes (no model, no engine), one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from guards.fake import FakeGuard
from indexer.embedder import HashingEmbedder
from indexer.pipeline import Indexer
from indexer.store import InMemoryStore
from runtime.app import create_app
from runtime.components import Components
from runtime.generation import FakeGenerator
from runtime.settings import Settings

CORPUS = Path(__file__).parent.parent / "fixtures" / "corpus"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        qdrant_path=tmp_path / "qdrant",
        cache_dir=tmp_path / "cache",
        stream_first_window_chars=6,
        stream_window_chars=12,
    )


@pytest.fixture
def components() -> Components:
    return Components(
        generator=FakeGenerator(reply="Mira Okonkwo designed the Zorblax protocol in 2019 [1]."),
        embedder=HashingEmbedder(),
        store=InMemoryStore("ripple-docs"),
        guard=FakeGuard(),
    )


@pytest.fixture
def client(settings: Settings, components: Components) -> Iterator[TestClient]:
    with TestClient(create_app(settings, components=components)) as test_client:
        import asyncio

        asyncio.run(Indexer(components.embedder, components.store).run([CORPUS]))
        yield test_client
