"""The documents API on the real app (fake chat model, in-memory store, hashing embedder): limits and
names refused in words, failed uploads that leave nothing behind, and no delete that a job would undo."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runtime.app import create_app
from runtime.components import Components
from runtime.settings import Settings


@pytest.fixture
def client(settings: Settings, components: Components, tmp_path: Path) -> Iterator[TestClient]:
    limited = settings.model_copy(update={"upload_dir": tmp_path / "uploads", "max_upload_mb": 1})
    with TestClient(create_app(limited, components=components)) as test_client:
        yield test_client


def upload(client: TestClient, name: str, content: bytes) -> Any:
    return client.post("/v1/documents", files={"file": (name, content, "text/markdown")})


def finished(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job  # type: ignore[no-any-return]


def test_an_upload_over_the_limit_is_refused_by_its_declared_size(client: TestClient, tmp_path: Path) -> None:
    r = upload(client, "big.md", b"x" * (2 * 1024 * 1024))
    assert r.status_code == 413, r.text
    assert "RIPPLE_MAX_UPLOAD_MB" in r.json()["error"]["message"] and "1 MiB" in r.json()["error"]["message"]
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_a_name_too_long_to_keep_is_a_400(client: TestClient) -> None:
    r = upload(client, "a" * 249 + ".md", b"# Notes\n\nKiwis are green.\n")
    assert r.status_code == 400 and "rename the file" in r.json()["error"]["message"], r.text


def test_a_failed_upload_leaves_the_files_as_they_were(client: TestClient, tmp_path: Path) -> None:
    good = b"# Notes\n\nKiwis are green.\n"
    assert finished(client, upload(client, "notes.md", good).json()["job"]["id"])["status"] == "done"
    # A re-upload that cannot be indexed: the index keeps the old text, and so does the file.
    job = finished(client, upload(client, "notes.md", "caf\xe9".encode("cp1252")).json()["job"]["id"])
    assert job["summary"]["failed"], job
    assert (tmp_path / "uploads" / "notes.md").read_bytes() == good
    # A new upload that cannot be indexed leaves no file that nothing can list or delete.
    job = finished(client, upload(client, "empty.md", b"   ").json()["job"]["id"])
    assert job["summary"]["failed"], job
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["notes.md"]


def test_a_document_being_indexed_is_listed_once_and_not_deleted(client: TestClient) -> None:
    """A delete while a job holds the document would be undone by the job (it indexes the file when it
    runs): 409 until the job is done, then the delete works."""
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    index, release = jobs._index, threading.Event()

    async def held(paths: list[Path], progress: Any) -> dict[str, Any]:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return await index(paths, progress)  # type: ignore[no-any-return]

    jobs._index = held
    first = upload(client, "same.md", b"# Same\n\nThe first text.\n").json()
    second = upload(client, "same.md", b"# Same\n\nThe second text.\n").json()
    doc_id = first["document"]["id"]
    listed = [d for d in client.get("/v1/documents").json()["data"] if d["id"] == doc_id]
    assert len(listed) == 1 and listed[0]["status"] in ("queued", "running"), listed
    r = client.delete(f"/v1/documents/{doc_id}")
    assert r.status_code == 409 and "once GET /v1/jobs/" in r.json()["error"]["message"], r.text
    release.set()
    assert finished(client, first["job"]["id"])["status"] == "done"
    assert finished(client, second["job"]["id"])["status"] == "done"
    assert client.delete(f"/v1/documents/{doc_id}").json()["deleted"] is True
    assert all(d["id"] != doc_id for d in client.get("/v1/documents").json()["data"])


def test_uploads_of_one_name_at_once_all_succeed(settings: Settings, components: Components, tmp_path: Path) -> None:
    """They shared one temporary file: the first rename took the others' (a 500 each). Sent at once on
    the app's own event loop, each larger than Starlette keeps in memory, so their reads interleave."""
    import httpx

    roomy = settings.model_copy(update={"upload_dir": tmp_path / "uploads", "max_upload_mb": 8})

    async def at_once(app: Any) -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
            body = [("race.md", f"Text {i}. ".encode() * 300_000, "text/markdown") for i in range(3)]
            sent = [http.post("/v1/documents", files={"file": b}) for b in body]
            return [r.status_code for r in await asyncio.gather(*sent)]

    with TestClient(create_app(roomy, components=components)) as client:
        assert client.portal is not None
        assert client.portal.call(at_once, client.app) == [202] * 3


def test_an_upload_the_queue_refuses_leaves_the_files_as_they_were(client: TestClient, tmp_path: Path) -> None:
    """The queue can fill between its check and the job's submission (the file is written in between)."""
    from runtime.errors import OverloadedError

    good = b"# Notes\n\nKiwis are green.\n"
    assert finished(client, upload(client, "notes.md", good).json()["job"]["id"])["status"] == "done"
    jobs = client.app.state.jobs  # type: ignore[attr-defined]

    def full(*args: object, **kwargs: object) -> None:
        raise OverloadedError("64 ingestion jobs are waiting: retry later")

    jobs.submit = full
    assert upload(client, "notes.md", b"# Notes\n\nKiwis are blue.\n").status_code == 429
    assert upload(client, "other.md", b"# Other\n\nText.\n").status_code == 429
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == ["notes.md"]
    assert (tmp_path / "uploads" / "notes.md").read_bytes() == good
