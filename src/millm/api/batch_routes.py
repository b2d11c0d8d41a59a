"""/v1/files and /v1/batches: OpenAI's Files and Batch APIs (the work is in services/batches.py)."""

from __future__ import annotations

from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, Form, Path, Query, UploadFile
from fastapi.responses import FileResponse
from sse_starlette import EventSourceResponse

from millm.api.openapi import sse_item_schema
from millm.api.sse import EventStream
from millm.api.state import RuntimeDep
from millm.protocol import batches as b
from millm.protocol.openai import ErrorResponse

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409)}
# (errors spelled out as JSON: with a streaming response class, FastAPI would give them its media type)
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
EVENTS: dict[int | str, dict[str, Any]] = {
    **{code: {"description": "An error", "content": _JSON_ERROR} for code in (400, 404)}, 200: {
    "description": "Server-sent events, each `data:` the Batch object after a change; ends when the batch ends",
    "content": {"text/event-stream": sse_item_schema(b.Batch)}}}
CHUNK = 1 << 20
FileId = Annotated[str, Path(description="The file's id, as POST /v1/files gave it.")]
BatchId = Annotated[str, Path(description="The batch's id, as POST /v1/batches gave it.")]


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


@router.post("/files", operation_id="createFile", response_model=b.FileObject, responses=ERRORS)
async def create_file(rt: RuntimeDep, file: UploadFile, purpose: str = Form(...)) -> b.FileObject:
    """Upload a file.

    A JSONL file of batch requests (multipart form: `file`, `purpose: batch`), at most 200 MB and 50,000 lines."""
    return await rt.batches.create_file(filename=file.filename or "batch.jsonl", purpose=purpose,
                                        chunks=_chunks(file))


@router.get("/files", operation_id="listFiles", response_model=b.FileList, responses=ERRORS)
async def list_files(
    rt: RuntimeDep,
    purpose: Annotated[str | None, Query(description="Only files with this purpose (batch, batch_output).")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="At most this many files.")] = 10000,
    after: Annotated[str | None, Query(description="A file id: list the files after it (paging).")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time: asc or desc.")] = "desc",
) -> b.FileList:
    """List files.

    Uploaded batch inputs and the output and error files of ended batches, newest first by default."""
    return rt.batches.list_files(purpose=purpose, limit=limit, after=after, order=order)


@router.get("/files/{file_id}", operation_id="retrieveFile", response_model=b.FileObject, responses=ERRORS)
async def retrieve_file(file_id: FileId, rt: RuntimeDep) -> b.FileObject:
    """Retrieve a file.

    One file's metadata: id, size in bytes, file name, purpose (batch or batch_output) and creation time."""
    return rt.batches.retrieve_file(file_id)


@router.delete("/files/{file_id}", operation_id="deleteFile", response_model=b.FileDeleted, responses=ERRORS)
async def delete_file(file_id: FileId, rt: RuntimeDep) -> b.FileDeleted:
    """Delete a file.

    A file a running batch reads or writes is a 409 until the batch ends."""
    return rt.batches.delete_file(file_id)


@router.get("/files/{file_id}/content", operation_id="downloadFile", response_class=FileResponse,
            responses={**ERRORS, 200: {"description": "The file's bytes (JSONL)",
                                       "content": {"application/octet-stream": {}}}})
async def download_file(file_id: FileId, rt: RuntimeDep) -> FileResponse:
    """Download a file's content.

    The bytes of an input, output or error file, as stored (one JSON object per line)."""
    return FileResponse(rt.batches.file_path(file_id), media_type="application/octet-stream")


@router.post("/batches", operation_id="createBatch", response_model=b.Batch, responses=ERRORS)
async def create_batch(body: b.BatchCreate, rt: RuntimeDep) -> b.Batch:
    """Create a batch.

    Run every line of an uploaded file (each a full request, optionally with its own `steering`) through the
    live worker at a lower priority; each line is checked first, and a bad line fails alone (error file)."""
    return await rt.batches.create_batch(body)


@router.get("/batches", operation_id="listBatches", response_model=b.BatchList, responses=ERRORS)
async def list_batches(
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100, description="At most this many batches.")] = 20,
    after: Annotated[str | None, Query(description="A batch id: list the batches after it (paging).")] = None,
) -> b.BatchList:
    """List batches.

    Batches newest first, paged with `after` (a batch id) and `limit`, each with its status and counts."""
    return rt.batches.list_batches(limit=limit, after=after)


@router.get("/batches/{batch_id}", operation_id="retrieveBatch", response_model=b.Batch, responses=ERRORS)
async def retrieve_batch(batch_id: BatchId, rt: RuntimeDep) -> b.Batch:
    """Retrieve a batch.

    Its status, request counts (total, completed, failed) and output and error file ids."""
    return rt.batches.retrieve_batch(batch_id)


@router.post("/batches/{batch_id}/cancel", operation_id="cancelBatch", response_model=b.Batch, responses=ERRORS)
async def cancel_batch(batch_id: BatchId, rt: RuntimeDep) -> b.Batch:
    """Cancel a batch.

    Lines not started are dropped and running ones stop within a decode step; finished lines stay in the output."""
    return await rt.batches.cancel_batch(batch_id)


@router.get("/batches/{batch_id}/events", operation_id="streamBatchEvents", response_class=EventStream,
            responses=EVENTS)
async def batch_events(batch_id: BatchId, rt: RuntimeDep) -> EventSourceResponse:
    """Stream a batch's progress.

    Server-sent events: the Batch object now and after each change (at most twice a second), until it ends."""
    rt.batches.retrieve_batch(batch_id)  # a 404 before the stream starts

    async def frames() -> AsyncIterator[dict[str, str]]:
        async for batch in rt.batches.events(batch_id):
            yield {"data": batch.model_dump_json()}

    return EventStream(frames(), ping=15)
