"""Documents over HTTP on the real server: upload -> background job -> answerable -> listed -> deleted."""

from __future__ import annotations

import time

import httpx

from tests.integration.conftest import Server

DOC = b"""# Quillon lighthouse

The Quillon lighthouse on Varrow Point is kept by Ada Brennock. Its lamp turns once every
eleven seconds and can be seen forty kilometres out to sea.
"""


def wait_for(server: Server, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while True:
        job = httpx.get(f"{server.base_url}/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_upload_index_list_retrieve_delete(server: Server) -> None:
    r = httpx.post(f"{server.base_url}/v1/documents", files={"file": ("quillon.md", DOC, "text/markdown")})
    assert r.status_code == 202, r.text
    doc, job = r.json()["document"], r.json()["job"]
    finished = wait_for(server, job["id"])
    assert finished["status"] == "done", finished
    assert finished["summary"]["added"] == [doc["source"]]  # type: ignore[index]

    listed = httpx.get(f"{server.base_url}/v1/documents").json()["data"]
    mine = [d for d in listed if d["id"] == doc["id"]]
    assert mine and mine[0]["status"] == "indexed" and mine[0]["chunks"] >= 1

    hits = httpx.post(f"{server.base_url}/v1/retrieve", json={"query": "Who keeps the Quillon lighthouse?"}).json()[
        "data"
    ]
    assert hits[0]["source"] == doc["source"]

    assert httpx.delete(f"{server.base_url}/v1/documents/{doc['id']}").json()["deleted"] is True
    hits = httpx.post(f"{server.base_url}/v1/retrieve", json={"query": "Who keeps the Quillon lighthouse?"}).json()[
        "data"
    ]
    assert all(h["source"] != doc["source"] for h in hits)
    assert httpx.delete(f"{server.base_url}/v1/documents/{doc['id']}").status_code == 404


def test_bad_uploads_are_refused_in_words(server: Server) -> None:
    r = httpx.post(f"{server.base_url}/v1/documents", files={"file": ("tool.exe", b"MZ", "application/octet-stream")})
    assert r.status_code == 400 and ".pdf" in r.json()["error"]["message"]
    empty = httpx.post(f"{server.base_url}/v1/documents", files={"file": ("empty.md", b"   ", "text/markdown")})
    job = wait_for(server, empty.json()["job"]["id"])
    assert job["status"] == "done" and "empty" in str(job["summary"]["failed"])  # type: ignore[index]
    assert httpx.get(f"{server.base_url}/v1/jobs/nope").status_code == 404
