"""HTTP routes for documents: upload (indexed by a background job), list, delete; job status.

Uploads go to `upload_dir` under their own file name (a second upload of the same name replaces
the document) and are indexed into the published version of the collection. A server whose
embedder or chunker differs from the published version's refuses uploads (409): re-indexing a
whole collection is a `ripple index` job, not a request.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import JSONResponse

from indexer.loaders import SUFFIXES
from indexer.pipeline import Indexer, doc_id_for, source_name
from runtime.errors import BadRequestError, ConflictError, NotFoundError, OverloadedError, PayloadTooLargeError
from runtime.jobs import Job, JobRunner
from runtime.settings import Settings

router = APIRouter()


def get_indexer(request: Request) -> Indexer:
    return request.app.state.indexer  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobRunner:
    return request.app.state.jobs  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


IndexerDep = Annotated[Indexer, Depends(get_indexer)]
Jobs = Annotated[JobRunner, Depends(get_jobs)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


_MAX_NAME = 200
"""Characters of an uploaded file's name (file systems allow 255 bytes, and the name is kept as it is)."""


@router.post("/v1/documents", status_code=202)
async def upload(file: UploadFile, indexer: IndexerDep, jobs: Jobs, settings: SettingsDep) -> JSONResponse:
    name = _SAFE_NAME.sub("_", Path(file.filename or "").name).lstrip(".")
    if not name or Path(name).suffix.lower() not in SUFFIXES:
        raise BadRequestError(f"upload a file named with one of {', '.join(sorted(SUFFIXES))}", param="file")
    if len(name) > _MAX_NAME:
        raise BadRequestError(
            f"the file name has {len(name)} characters, over the {_MAX_NAME} Ripple keeps: rename the file",
            param="file",
        )
    published = await indexer.store.published()
    if published is not None and published != indexer.version:
        raise ConflictError(
            f"the collection is {published}, built with another embedding model or chunker than this server's "
            f"({indexer.version}): re-index with `ripple index` using this server's settings"
        )
    jobs.check_room()
    limit = settings.max_upload_mb * 1024 * 1024
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    target = settings.upload_dir / name
    # Each upload writes a file of its own (two uploads of one name at once must not share one), hidden
    # from `ripple index` until it is complete.
    partial = settings.upload_dir / f".{uuid.uuid4().hex}.part"
    size = 0
    with partial.open("wb") as out:
        while chunk := await file.read(1 << 20):
            size += len(chunk)
            if size > limit:
                out.close()
                partial.unlink(missing_ok=True)
                raise PayloadTooLargeError(
                    f"the upload is over {settings.max_upload_mb} MiB (RIPPLE_MAX_UPLOAD_MB): send a smaller file, "
                    "or raise the limit"
                )
            out.write(chunk)
    # The file it replaces is kept aside until the new one is indexed: if it cannot be (empty, not UTF-8,
    # a broken PDF), the old file comes back, as the index still holds the old text.
    previous = settings.upload_dir / f".{uuid.uuid4().hex}.previous" if target.exists() else None
    if previous is not None:
        target.replace(previous)
    partial.replace(target)
    source = source_name(target)
    try:
        job = jobs.submit([target], on_end=lambda job: _keep_or_restore(job, source, target, previous))
    except OverloadedError:  # the queue filled while the file was written: leave the files as they were
        if previous is not None:
            previous.replace(target)
        else:
            target.unlink(missing_ok=True)
        raise
    return JSONResponse(
        {"document": {"id": doc_id_for(source), "source": source}, "job": job.as_dict()}, status_code=202
    )


def _keep_or_restore(job: Job, source: str, target: Path, previous: Path | None) -> None:
    """After an upload's job: keep the new file if it was indexed; else put back the file it replaced, or
    remove it when it replaced none (nothing could list or delete it)."""
    failed = job.status != "done" or any(f.get("source") == source for f in (job.summary or {}).get("failed", []))
    if failed and previous is not None:
        previous.replace(target)
    elif failed:
        target.unlink(missing_ok=True)
    elif previous is not None:
        previous.unlink(missing_ok=True)


@router.get("/v1/jobs/{job_id}")
async def job_status(job_id: str, jobs: Jobs) -> dict[str, Any]:
    job = jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id} (jobs are kept in memory until the server restarts)")
    return job.as_dict()


@router.get("/v1/documents")
async def list_documents(indexer: IndexerDep, jobs: Jobs) -> dict[str, Any]:
    version = await indexer.store.published()
    docs: list[dict[str, Any]] = []
    if version is not None:
        state, sources = await indexer.store.state(version)
        for doc_id, hashes in sorted(state.items(), key=lambda kv: sources[kv[0]]):
            docs.append({"id": doc_id, "source": sources[doc_id], "chunks": sum(hashes.values()), "status": "indexed"})
    listed = {d["id"] for d in docs}
    for job in jobs.active():
        for path in job.paths:
            source = source_name(Path(path))
            if doc_id_for(source) not in listed:
                listed.add(doc_id_for(source))
                docs.append({"id": doc_id_for(source), "source": source, "chunks": 0, "status": job.status})
    return {"object": "list", "collection": indexer.store.alias, "version": version, "data": docs}


@router.delete("/v1/documents/{doc_id}")
async def delete_document(doc_id: str, indexer: IndexerDep, jobs: Jobs, settings: SettingsDep) -> dict[str, Any]:
    for job in jobs.active():
        # Deleting now would be undone: the job indexes the file when it runs.
        if any(doc_id_for(source_name(Path(p))) == doc_id for p in job.paths):
            raise ConflictError(
                f"document {doc_id} is being indexed by job {job.id} ({job.status}): delete it once "
                f"GET /v1/jobs/{job.id} says done"
            )
    source = await indexer.remove(doc_id)
    if source is None:
        raise NotFoundError(f"no document {doc_id} in {indexer.store.alias!r} (see GET /v1/documents)")
    uploaded = Path(source)
    if uploaded.absolute().parent == settings.upload_dir.absolute():
        uploaded.unlink(missing_ok=True)
    return {"id": doc_id, "source": source, "deleted": True}
