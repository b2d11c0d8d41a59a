"""Files and batches: OpenAI's Batch API over the live generation worker, durable in the data dir.

Storage (files beside the profile database, under `<data_dir>/batch/`):
- `files/<file_id>.jsonl` holds a file's bytes and `files/<file_id>.json` its metadata. A batch's output and
  error files are ordinary files, written in place while the batch runs and listed once it ends.
- `batches/<batch_id>.json` holds the batch object, rewritten atomically (temp file + rename) on each change.

Each output or error line is appended and fsync'd (lines finishing together share one write and fsync, in a
worker thread) before the line counts as done, so after a
restart or a SIGKILL the lines present are exactly the requests finished; a torn last line is cut off, and the
batch resumes with the lines whose custom_id is in neither file: none twice, none missing.

Every input line is checked before the batch starts (JSON, custom_id unique, method, url matching the batch's
endpoint, body valid for it, not streamed); a bad line goes to the error file alone. Valid lines run through the
same GenerationService as live requests, as background engine requests that queue behind every live one and hold
at most `rows` rows (one fewer than the worker's batch: live traffic always finds a free row); another `rows` lines
wait in the worker's queue so a finished row is refilled at the next decode step. Cancel stops waiting lines at once and in-flight ones within a
decode step. Progress: the batch object's request_counts, Prometheus metrics, and `events()` for a stream.

Concurrency: all state changes run on the event loop (one thread). Output lines are written and fsync'd on a worker
thread, and so are the file metadata when a batch ends; validating a large input file (and scanning large output files
on resume) reads on a worker thread too. The batch object's own writes are synchronous and small.

Length (over 400 lines): the file store, the batch state machine and the runner share one lock and one
on-disk layout, and are read together when a batch's durability is in question.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from millm.errors import Conflict, InvalidRequest, MillmError, NotFound, QueueFull, Unavailable
from millm.protocol import batches as b
from millm.protocol import openai as p
from millm.services.engine_client import BACKGROUND

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FILE_BYTES = 200 * 1024 * 1024  # as OpenAI's batch input limit
MAX_LINES = 50_000
TERMINAL = ("failed", "completed", "expired", "cancelled")
REQUEST_MODELS: dict[str, type[p.OpenAIBase]] = {
    "/v1/chat/completions": p.ChatCompletionRequest,
    "/v1/completions": p.CompletionRequest,
    "/v1/embeddings": p.EmbeddingRequest,
}


def _now() -> int:
    return int(time.time())


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _loc(err: Mapping[str, Any]) -> str:
    out = ""
    for part in err.get("loc", ()):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _output_line(rid: str, custom_id: str, body_json: str) -> bytes:
    """A successful line of the output file, as b.BatchOutputLine(id, custom_id, response=BatchLineResponse(200,
    rid, body)).model_dump_json() + "\n" writes it, with the response body's JSON spliced in as it is."""
    return (f'{{"id":{json.dumps(rid)},"custom_id":{json.dumps(custom_id, ensure_ascii=False)},'
            f'"response":{{"status_code":200,"request_id":{json.dumps(rid)},"body":{body_json}}},"error":null}}\n'
            ).encode()


OFF_LOOP_BYTES = 256 * 1024


async def _off_loop(paths: list[Path], fn: Callable[..., T], *args: Any) -> T:
    """fn(*args), on a worker thread when the files it reads are large (else the thread hop costs more)."""
    size = sum(pth.stat().st_size for pth in paths if pth.exists())
    return await asyncio.to_thread(fn, *args) if size >= OFF_LOOP_BYTES else fn(*args)


def _append_sync(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class _Appender:
    """Appends lines to one file without blocking the event loop: lines that arrive while a write is in flight go
    out together in the next one (one write, one fsync, in a worker thread); `append` returns once its line is on
    disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: list[tuple[bytes, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def append(self, data: bytes) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((data, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(fut)

    async def drain(self) -> None:
        """Wait until every line appended so far is written (or failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _flush(self) -> None:
        while self._queue:
            items, self._queue = self._queue, []
            try:
                await asyncio.to_thread(_append_sync, self.path, b"".join(d for d, _ in items))
            except Exception as e:  # noqa: BLE001 - each waiting line gets the error
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for _, fut in items:
                if not fut.done():
                    fut.set_result(None)


@dataclass
class Line:
    index: int
    custom_id: str
    url: str
    request: p.OpenAIBase  # the body, validated once (`_validate`)


class BatchService:
    def __init__(self, *, data_dir: Path, generation: Any, embeddings: Any, worker: Any, registry: Any,
                 rows: int, wait_ready: Callable[[], Awaitable[None]] | None = None) -> None:
        self.root = Path(data_dir) / "batch"
        self.files_dir = self.root / "files"
        self.batches_dir = self.root / "batches"
        self.generation = generation
        self.embeddings = embeddings
        self.worker = worker
        self.rows = max(1, rows)
        self.wait_ready = wait_ready  # the start-up model load, which resumed batches wait for
        self._tasks: dict[str, asyncio.Task] = {}
        self._status: dict[str, str] = {}  # every batch's status as last saved (for the gauges)
        self._changed: asyncio.Condition | None = None
        self.lines_done = Counter("millm_batch_lines", "Batch lines finished, by outcome", ["outcome"],
                                  registry=registry)
        self.batches_gauge = Gauge("millm_batches", "Batches by status", ["status"], registry=registry)
        self.pending_gauge = Gauge("millm_batch_lines_pending", "Batch lines not yet run", registry=registry)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        self._changed = asyncio.Condition()
        for path in sorted(self.batches_dir.glob("batch_*.json")):
            batch = b.Batch.model_validate_json(path.read_text())
            self._status[batch.id] = batch.status
            if batch.status in ("validating", "in_progress", "finalizing"):
                log.info("resuming batch %s (%d/%d done)", batch.id, batch.request_counts.completed
                         + batch.request_counts.failed, batch.request_counts.total)
                self._launch(batch)
            elif batch.status == "cancelling":
                await self._finish(batch, "cancelled")
        self._update_gauges()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ files

    async def create_file(self, *, filename: str, purpose: str, chunks: AsyncIterator[bytes]) -> b.FileObject:
        if purpose != "batch":
            raise InvalidRequest("purpose must be 'batch' (the only purpose this server stores)", param="purpose")
        fid = _new_id("file-")
        tmp = self.files_dir / f"{fid}.part"
        size = 0
        try:
            with tmp.open("wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        raise InvalidRequest(f"the file is over {MAX_FILE_BYTES} bytes", param="file",
                                             code="file_too_large")
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name (and the metadata) say the file exists
            data = tmp.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidRequest(f"the file is not UTF-8 text (byte {e.start})", param="file",
                                     code="invalid_file") from None
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if not lines:
                raise InvalidRequest("the file has no request lines", param="file", code="invalid_file")
            if len(lines) > MAX_LINES:
                raise InvalidRequest(f"the file has {len(lines)} lines; at most {MAX_LINES}", param="file",
                                     code="file_too_large")
            os.replace(tmp, self.files_dir / f"{fid}.jsonl")
        finally:
            tmp.unlink(missing_ok=True)
        obj = b.FileObject(id=fid, bytes=size, created_at=_now(), filename=os.path.basename(filename or "batch.jsonl"),
                           purpose="batch")
        self._write_json(self.files_dir / f"{fid}.json", obj.model_dump())
        return obj

    def _file_meta(self, fid: str) -> b.FileObject:
        path = self.files_dir / f"{fid}.json"
        if not fid.startswith("file-") or "/" in fid or not path.is_file():
            raise NotFound(f"no file {fid!r}", param="file_id", code="file_not_found")
        return b.FileObject.model_validate_json(path.read_text())

    def list_files(self, *, purpose: str | None = None, limit: int = 10000, after: str | None = None,
                   order: str = "desc") -> b.FileList:
        files = [b.FileObject.model_validate_json(pth.read_text()) for pth in self.files_dir.glob("file-*.json")]
        files = [f for f in files if purpose is None or f.purpose == purpose]
        files.sort(key=lambda f: (f.created_at, f.id), reverse=order == "desc")
        if after is not None:
            ids = [f.id for f in files]
            files = files[ids.index(after) + 1:] if after in ids else []
        page = files[:limit]
        return b.FileList(data=page, has_more=len(files) > limit, first_id=page[0].id if page else None,
                          last_id=page[-1].id if page else None)

    def retrieve_file(self, fid: str) -> b.FileObject:
        return self._file_meta(fid)

    def file_path(self, fid: str) -> Path:
        self._file_meta(fid)
        return self.files_dir / f"{fid}.jsonl"

    def delete_file(self, fid: str) -> b.FileDeleted:
        self._file_meta(fid)
        for batch in self._all_batches():
            if batch.status not in TERMINAL and fid in (batch.input_file_id, batch.output_file_id,
                                                         batch.error_file_id):
                raise Conflict(f"file {fid} belongs to batch {batch.id}, which is still running; cancel it first",
                               param="file_id", code="file_in_use")
        (self.files_dir / f"{fid}.jsonl").unlink(missing_ok=True)
        (self.files_dir / f"{fid}.json").unlink(missing_ok=True)
        return b.FileDeleted(id=fid)

    # ------------------------------------------------------------------ batches

    async def create_batch(self, req: b.BatchCreate) -> b.Batch:
        meta = self._file_meta(req.input_file_id)
        if meta.purpose != "batch":
            raise InvalidRequest("the input file's purpose must be 'batch'", param="input_file_id")
        if req.metadata is not None and len(req.metadata) > 16:
            raise InvalidRequest("metadata holds at most 16 pairs", param="metadata")
        now = _now()
        batch = b.Batch(id=_new_id("batch_"), endpoint=req.endpoint, input_file_id=req.input_file_id,
                        status="validating", created_at=now, expires_at=now + 24 * 3600,
                        output_file_id=_new_id("file-"), error_file_id=_new_id("file-"), metadata=req.metadata)
        self._save(batch)
        self._launch(batch)
        return batch

    def retrieve_batch(self, bid: str) -> b.Batch:
        path = self.batches_dir / f"{bid}.json"
        if not bid.startswith("batch_") or "/" in bid or not path.is_file():
            raise NotFound(f"no batch {bid!r}", param="batch_id", code="batch_not_found")
        return b.Batch.model_validate_json(path.read_text())

    def _all_batches(self) -> list[b.Batch]:
        return [b.Batch.model_validate_json(pth.read_text()) for pth in self.batches_dir.glob("batch_*.json")]

    def list_batches(self, *, limit: int = 20, after: str | None = None) -> b.BatchList:
        batches = sorted(self._all_batches(), key=lambda x: (x.created_at, x.id), reverse=True)
        if after is not None:
            ids = [x.id for x in batches]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        page = batches[:limit]
        return b.BatchList(data=page, has_more=len(batches) > limit, first_id=page[0].id if page else None,
                           last_id=page[-1].id if page else None)

    async def cancel_batch(self, bid: str) -> b.Batch:
        batch = self.retrieve_batch(bid)
        if batch.status in TERMINAL or batch.status == "cancelling":
            if batch.status in ("completed", "failed", "expired"):
                raise Conflict(f"batch {bid} is already {batch.status}", param="batch_id", code="batch_ended")
            return batch
        batch.status, batch.cancelling_at = "cancelling", _now()
        self._save(batch)
        task = self._tasks.get(bid)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            await self._finish(self.retrieve_batch(bid), "cancelled")
        return self.retrieve_batch(bid)

    async def events(self, bid: str) -> AsyncIterator[b.Batch]:
        """The batch now, then again after each change, until it ends."""
        batch = self.retrieve_batch(bid)
        assert self._changed is not None
        while True:
            yield batch
            if batch.status in TERMINAL:
                return
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=15)
                except asyncio.TimeoutError:
                    pass
            batch = self.retrieve_batch(bid)

    # ------------------------------------------------------------------ running

    def _launch(self, batch: b.Batch) -> None:
        task = asyncio.create_task(self._run(batch.id), name=f"batch {batch.id}")
        self._tasks[batch.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(batch.id, None))

    def _validate(self, batch: b.Batch) -> tuple[list[Line], list[b.BatchOutputLine]]:
        model = REQUEST_MODELS[batch.endpoint]
        text = (self.files_dir / f"{batch.input_file_id}.jsonl").read_text(encoding="utf-8")
        good: list[Line] = []
        bad: list[b.BatchOutputLine] = []
        seen: set[str] = set()
        for index, raw in enumerate(ln for ln in text.splitlines() if ln.strip()):
            custom_id: str | None = None

            # called within this iteration only, with its index and its custom_id as known at the call
            def fail(code: str, message: str) -> None:
                bad.append(b.BatchOutputLine(id=f"batch_req_line{index}", custom_id=custom_id,  # noqa: B023
                                             error=b.BatchLineError(code=code, message=f"line {index + 1}: {message}")))  # noqa: B023

            try:
                obj = json.loads(raw)
            except ValueError as e:
                fail("invalid_json", f"not JSON ({e})")
                continue
            if not isinstance(obj, dict):
                fail("invalid_request", "a line must be a JSON object")
                continue
            custom_id = obj.get("custom_id") if isinstance(obj.get("custom_id"), str) else None
            if custom_id is None:
                fail("missing_custom_id", "custom_id (a string) is required")
                continue
            if custom_id in seen:
                dup, custom_id = custom_id, None  # the error line must not mark the first one done
                fail("duplicate_custom_id", f"custom_id {dup!r} appears more than once")
                continue
            seen.add(custom_id)
            if obj.get("method", "POST") != "POST":
                fail("invalid_method", "method must be POST")
                continue
            if obj.get("url") != batch.endpoint:
                fail("mismatched_url", f"url {obj.get('url')!r} is not this batch's endpoint {batch.endpoint}")
                continue
            body = obj.get("body")
            if not isinstance(body, dict):
                fail("invalid_request", "body must be a JSON object")
                continue
            if body.get("stream"):
                fail("invalid_request", "stream is not allowed in a batch")
                continue
            try:
                request = model.model_validate(body)
            except ValidationError as e:
                first = e.errors()[0]
                fail("invalid_request", f"body.{_loc(first)}: {first['msg']}")
                continue
            good.append(Line(index, custom_id, batch.endpoint, request))
        return good, bad

    async def _run(self, bid: str) -> None:
        batch = self.retrieve_batch(bid)
        out_path = self.files_dir / f"{batch.output_file_id}.jsonl"
        err_path = self.files_dir / f"{batch.error_file_id}.jsonl"
        try:
            try:  # (a large file on a thread: 50,000 lines take seconds, which live requests must not wait for)
                lines, invalid = await _off_loop([self.files_dir / f"{batch.input_file_id}.jsonl"], self._validate,
                                                 batch)
            except (OSError, UnicodeDecodeError) as e:
                batch.errors = b.BatchErrors(data=[b.BatchError(code="invalid_file",
                                                                message=f"the input file cannot be read: {e}")])
                await self._finish(batch, "failed")
                return
            if self.wait_ready is not None:
                await self.wait_ready()
            done = await _off_loop([out_path, err_path], lambda: self._done_ids(out_path) | self._done_ids(err_path))
            if batch.status == "validating":
                for line in invalid:
                    if line.id not in done:  # (a restart during validation wrote some already)
                        self._append(err_path, line)
                batch.status, batch.in_progress_at = "in_progress", _now()
            batch.request_counts = b.RequestCounts(total=len(lines) + len(invalid),
                                                   completed=self._count(out_path), failed=self._count(err_path))
            self._save(batch)
            await self._notify()
            todo_lines = [ln for ln in lines if ln.custom_id not in done]
            self.pending_gauge.inc(len(todo_lines))
            todo = iter(todo_lines)  # shared by the runners: each line is taken by one
            # Generation lines: the worker holds at most `rows` of them in its batch (Worker.background_rows); as many
            # again wait in its queue, behind every live request, so a finished row is refilled at the next decode
            # step instead of after a trip through the event loop. Embedding lines run as worker calls between
            # steps: `rows` at a time.
            concurrency = self.rows if batch.endpoint == "/v1/embeddings" else 2 * self.rows
            last_save = [time.monotonic()]
            writers = {True: _Appender(out_path), False: _Appender(err_path)}
            BACKGROUND.set(True)  # this task's engine requests queue behind live ones (inherited by the runners)

            async def runner() -> None:
                for line in todo:
                    ok, data = await self._execute(batch, line)
                    self.pending_gauge.dec()
                    await writers[ok].append(data)
                    self.lines_done.labels("completed" if ok else "failed").inc()
                    if ok:
                        batch.request_counts.completed += 1
                    else:
                        batch.request_counts.failed += 1
                    if time.monotonic() - last_save[0] > 0.5:
                        last_save[0] = time.monotonic()
                        self._save(batch)
                        await self._notify()

            runners = [asyncio.create_task(runner()) for _ in range(min(concurrency, len(todo_lines)))]
            try:
                await asyncio.gather(*runners)
            finally:  # (cancelled, or a runner failed: stop the others, and let lines being written land first)
                for t in runners:
                    t.cancel()
                await asyncio.gather(*runners, return_exceptions=True)
                for w in writers.values():
                    await w.drain()
                self.pending_gauge.set(0)
            batch.status, batch.finalizing_at = "finalizing", _now()  # (saved with the end: nothing left to run)
            await self._finish(batch, "completed")
        except asyncio.CancelledError:
            current = self.retrieve_batch(bid)
            if current.status == "cancelling":
                batch.status, batch.cancelling_at = "cancelling", current.cancelling_at
                batch.request_counts = b.RequestCounts(total=batch.request_counts.total,
                                                       completed=self._count(out_path), failed=self._count(err_path))
                await self._finish(batch, "cancelled")
            else:  # server shutdown: keep the status so the next start resumes it
                self._save(batch)
            raise
        except Exception as e:  # noqa: BLE001 - a bug: fail this batch, keep serving
            log.exception("batch %s failed", bid)
            batch.errors = b.BatchErrors(data=[b.BatchError(code="internal_error", message=str(e))])
            await self._finish(batch, "failed")

    async def _execute(self, batch: b.Batch, line: Line) -> tuple[bool, bytes]:
        """Run one line; (whether it succeeded, its output or error file line)."""
        rid = _new_id("batch_req_")
        req: Any = line.request
        while True:
            try:
                if line.url == "/v1/embeddings":
                    value: Any = await self.embeddings.embed(req)
                elif line.url == "/v1/chat/completions":
                    value = (await self.generation.chat(req)).value
                else:
                    value = (await self.generation.completion(req)).value
                return True, _output_line(rid, line.custom_id, value.model_dump_json())
            except (QueueFull, Unavailable) as e:  # a full queue or no model (yet): wait, not fail
                await asyncio.sleep(e.retry_after or 1.0)
            except MillmError as e:
                out = b.BatchOutputLine(id=rid, custom_id=line.custom_id, response=b.BatchLineResponse(
                    status_code=e.status, request_id=rid, body=p.ErrorResponse(error=p.ErrorInfo(
                        message=e.message, type=e.type, param=e.param, code=e.code)).model_dump()))
                return False, (out.model_dump_json() + "\n").encode()

    async def _finish(self, batch: b.Batch, status: str) -> None:
        now = _now()
        batch.status = status  # type: ignore[assignment]
        setattr(batch, {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at",
                        "expired": "expired_at"}[status], now)
        writes = []
        for fid in (batch.output_file_id, batch.error_file_id):
            if fid is None:
                continue
            path = self.files_dir / f"{fid}.jsonl"
            if not path.exists():
                path.touch()
            meta = b.FileObject(id=fid, bytes=path.stat().st_size, created_at=now, purpose="batch_output",
                                filename=f"{batch.id}_{'output' if fid == batch.output_file_id else 'error'}.jsonl")
            writes.append(asyncio.to_thread(self._write_json, self.files_dir / f"{fid}.json", meta.model_dump()))
        await asyncio.gather(*writes)  # both files' metadata on disk (fsync'd together) before the batch says it ended
        out = self.files_dir / f"{batch.output_file_id}.jsonl"
        errs = self.files_dir / f"{batch.error_file_id}.jsonl"
        batch.request_counts.completed, batch.request_counts.failed = self._count(out), self._count(errs)
        self._save(batch)
        await self._notify()

    # ------------------------------------------------------------------ storage helpers

    def _append(self, path: Path, line: b.BatchOutputLine) -> None:
        _append_sync(path, (line.model_dump_json() + "\n").encode())

    def _done_ids(self, path: Path) -> set[str]:
        """custom_ids and line ids of the complete lines in an output or error file; a torn last line is cut off."""
        if not path.exists():
            return set()
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with path.open("r+b") as f:
                f.truncate(end)
        ids: set[str] = set()
        for raw in data[:end].splitlines():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            ids.update(v for v in (obj.get("custom_id"), obj.get("id")) if v is not None)
        return ids

    @staticmethod
    def _count(path: Path) -> int:
        return path.read_bytes().count(b"\n") if path.exists() else 0

    def _save(self, batch: b.Batch) -> None:
        self._write_json(self.batches_dir / f"{batch.id}.json", batch.model_dump())
        if self._status.get(batch.id) != batch.status:
            self._status[batch.id] = batch.status
            self._update_gauges()

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _update_gauges(self) -> None:
        counts: dict[str, int] = {}
        for status in self._status.values():
            counts[status] = counts.get(status, 0) + 1
        for status in ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                       "cancelled"):
            self.batches_gauge.labels(status).set(counts.get(status, 0))

