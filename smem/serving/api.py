"""The HTTP API: `POST /chat/stream` as Server-Sent Events, `GET /memories`, `GET /health`.

For people who build their own front end on the runtime the Gradio app uses; `app.py`
mounts Gradio on the app `create_api` returns, so one process serves both and both share one
generation queue. Nothing here knows about Gradio.

A request flows request → pydantic model → engine → typed events → `data: {json}` lines
(FastAPI's own event-stream support, which also documents every event in the OpenAPI
schema and sends a `: ping` comment after 15 quiet seconds). The engine is a blocking
generator, so each answer runs in a worker thread that first takes its turn in the runtime's
`GenerationQueue` — generation is serialised, not batched: one model, one answer at a time,
first come first served — and reports its place in line as `queued` events. A client that
disconnects sets the answer's cancel event; the engine stops at the next token and the
queue moves on.

Every error, whatever raised it, has one shape, `{"error": {"status", "field", "message",
"details"}}`, with `field` naming the offending input (docs/api.md).

`python -m smem.serving.api` serves the API alone (no UI) with uvicorn.
"""

import argparse
import asyncio
import logging
import threading
from collections.abc import AsyncIterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Optional

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smem.serving.api_schema import (
    CHAT_PATH,
    SESSION_PATTERN,
    ApiSettings,
    ErrorBody,
    ErrorDetail,
    ErrorResponse,
    HealthResponse,
    Limits,
    Link,
    MemoriesResponse,
    MemoryState,
    QueueState,
    SessionStats,
    StreamEvent,
    chat_request_model,
)
from smem.generation.events import Done, Event
from smem.memory.pool import MemoryPool
from smem.serving.queueing import Cancelled
from smem.serving.runtime import Runtime
from smem.serving.sessions import SessionPools

log = logging.getLogger("smem.serving.api")


# -- errors ---------------------------------------------------------------------------------


class ApiError(HTTPException):
    """An error to answer with, naming the input at fault. A subclass of FastAPI's
    HTTPException so that one raised while the body is read is not turned into a 400."""

    def __init__(self, status: int, field: Optional[str], message: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.field = field


def error_body(status: int, details: list[ErrorDetail]) -> ErrorBody:
    return ErrorBody(status=status, field=details[0].field, message=details[0].message, details=details)


def error_response(status: int, details: list[ErrorDetail], headers: Optional[Mapping[str, str]] = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=error_body(status, details)).model_dump(), status_code=status, headers=headers)


def _field_path(location: tuple[Any, ...]) -> str:
    """`("body", "history", 2, "content")` → `history.2.content`; the body itself → `body`."""
    if location and location[0] in ("body", "query", "path", "header"):
        location = location[1:]
    return ".".join(str(part) for part in location) or "body"


def _describe(error: Mapping[str, Any]) -> ErrorDetail:
    if error["type"] == "json_invalid":
        problem = (error.get("ctx") or {}).get("error", "invalid JSON")
        position = error["loc"][-1] if isinstance(error["loc"][-1], int) else "?"
        return ErrorDetail(field="body", message=f"body: malformed JSON ({problem} at position {position})")
    field = _field_path(tuple(error["loc"]))
    if field == "body" and error["type"] in ("missing", "model_type", "model_attributes_type", "dict_type"):
        hint = " with Content-Type: application/json" if isinstance(error.get("input"), bytes) else ""
        return ErrorDetail(field="body", message=f"body: must be a JSON object{hint}")
    return ErrorDetail(field=field, message=f"{field}: {error['msg']}")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    status = 400 if any(error["type"] == "json_invalid" for error in errors) else 422
    return error_response(status, [_describe(error) for error in errors])


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        message = f"body: not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at position {cause.start})"
        detail = ErrorDetail(field="body", message=message)
    elif isinstance(exc, ApiError):
        detail = ErrorDetail(field=exc.field, message=str(exc.detail))
    elif exc.status_code == 400:
        detail = ErrorDetail(field="body", message=f"body: {exc.detail}")
    else:
        detail = ErrorDetail(field=None, message=str(exc.detail))
    return error_response(exc.status_code, [detail], headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, [ErrorDetail(field=None, message="internal server error")])


class BodyLimit:
    """Refuses a chat body over `limit` bytes (413) as soon as its declared length or the
    bytes received so far show it, so a huge body is never buffered whole. Only the chat
    route: a mounted UI (file uploads) keeps its own limits. (Starlette's own limiter answers
    in plain text, not in this API's error shape.)"""

    def __init__(self, app: ASGIApp, path: str, limit: int) -> None:
        self.app = app
        self.path = path
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        received = 0

        async def limited() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.limit:
                raise self._too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, "body", f"body: larger than the {self.limit} bytes this server accepts")


ERROR_DESCRIPTIONS = {
    400: "The body is not JSON, or not UTF-8.",
    404: "Unknown memory set or session.",
    413: "The body is larger than any valid request.",
    422: "A field is missing, of the wrong type or out of range; `field` names it.",
    503: "Too many answers queued; retry after `Retry-After` seconds.",
}


def _responses(*statuses: int, streaming: bool = False) -> dict[int | str, dict[str, Any]]:
    """Error responses for the OpenAPI document. FastAPI files a `model` under the route's own
    media type, which for the streaming route is the event stream, so there the JSON schema is
    referenced explicitly (the JSON routes' `model` entries register it)."""
    if not streaming:
        return {status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    return {status: {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": schema}}} for status in statuses}


# -- the app --------------------------------------------------------------------------------

STREAM_DESCRIPTION = """\
Answers as Server-Sent Events: one `data: {json}` line per event, each with a `type`:
`queued` (only while waiting for the model: `position` = answers ahead), `memories` (initial set),
`context` (context-size figures), `thinking` / `token` (text in `t`), `memory_update` (the set changed
at `at_token`: `memories`, `added`, `removed`), then `done` (statistics) — or `error` if the answer
failed after the stream began. `: ping` comment lines may appear and carry nothing.
Each memory has at least `id`, `content` and `score`. See docs/api.md for every field."""


def _iso(epoch: float) -> Optional[str]:
    return None if epoch != epoch else datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


Generate = Callable[[MemoryPool, dict[str, Any], threading.Event], Iterator[Event]]
"""Runs `StreamingEngine.stream(**kwargs)` over a pool wherever the model lives, ending with a
`Done` that carries the learned state, and stops soon after the event is set. On ZeroGPU that
is a `@spaces.GPU` function in a forked worker, so the pool travels pickled and comes back only
through `Done.learned`, and the event cannot cross into the worker."""


def generate_here(runtime: Runtime) -> Generate:
    """The model in this process: stream over the pool directly; a cancelled answer ends with
    `Done(stop_reason="cancelled")` and learns from what it generated."""

    def generate(pool: MemoryPool, kwargs: dict[str, Any], cancel: threading.Event) -> Iterator[Event]:
        return runtime.engine(pool).stream(**kwargs, cancel=cancel, return_learned=True)

    return generate


def create_api(runtime: Runtime, settings: Optional[ApiSettings] = None, generate: Optional[Generate] = None) -> FastAPI:
    """The API over `runtime` (limits from `settings`, else from `SMEM_API_*` variables).
    Sessions live in the returned app; the generation queue is the runtime's, shared with any
    UI mounted on the same app. `generate` is where answers run (default: this process)."""
    settings = settings or ApiSettings.from_env()
    generate_answer = generate or generate_here(runtime)
    sessions = SessionPools(runtime.sets, limit=settings.max_sessions)
    ChatRequest = chat_request_model(settings, lambda: runtime.sets.names, runtime.sets.default)

    app = FastAPI(
        title="Streaming Memory API",
        version="1.0.0",
        description="Hebbian memory re-retrieved while the model writes; see docs/api.md.",
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(BodyLimit, path=CHAT_PATH, limit=settings.max_body_bytes)

    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smem-api-model")

    def answer(request: Any, emit: Callable[[dict[str, Any]], None], cancel: threading.Event) -> None:
        """Runs on the one model thread. Answers are serialised anyway, and keeping the model's
        and the pools' allocations on one thread lets the allocator reuse one arena instead of
        growing one per request thread (measured: RSS settles instead of creeping)."""
        with sessions.checkout(request.memory_set, request.session) as pool:
            stream = generate_answer(
                pool,
                {
                    "message": request.message,
                    "history": [message.model_dump() for message in request.history],
                    "update_every_n": request.update_every_n,
                    "max_memories": request.max_memories,
                    "lookback_tokens": request.lookback_tokens,
                    "max_new_tokens": request.max_new_tokens,
                    "temperature": request.temperature,
                    "seed": request.seed,
                    "enable_thinking": request.enable_thinking,
                },
                cancel,
            )
            try:
                for event in stream:
                    if isinstance(event, Done) and event.learned is not None and len(event.learned) == len(pool):
                        pool.set_learning_state(event.learned)
                    emit(event.to_sse())
            finally:
                stream.close()

    def generate(request: Any, emit: Callable[[dict[str, Any]], None], cancel: threading.Event) -> None:
        """One answer, from its request's thread: wait for the model, then have the model thread
        stream it. Queue slot before session lock, always, so two answers never wait on each other."""
        try:
            with runtime.queue.slot(on_wait=lambda ahead: emit({"type": "queued", "position": ahead}), cancel=cancel):
                model_thread.submit(answer, request, emit, cancel).result()
        except Cancelled:
            log.info("client left while queued (session %s)", request.session)
        except Exception as exc:
            log.exception("answer failed (session %s)", request.session)
            detail = ErrorDetail(field=None, message=f"generation failed: {type(exc).__name__}")
            emit({"type": "error", "error": error_body(500, [detail]).model_dump()})

    def admit() -> None:
        """Refuse before the stream starts (after that the status is already 200)."""
        if runtime.queue.waiting >= settings.max_queue:
            raise ApiError(503, None, f"{runtime.queue.waiting} answers are queued; try again shortly", headers={"Retry-After": "5"})

    @app.post(
        CHAT_PATH,
        response_class=EventSourceResponse,
        summary="Stream an answer while memories are re-retrieved",
        description=STREAM_DESCRIPTION,
        responses=_responses(400, 413, 422, 503, streaming=True),
        dependencies=[Depends(admit)],
    )
    async def chat_stream(request: ChatRequest) -> AsyncIterable[StreamEvent]:  # type: ignore[valid-type]
        """Relays the worker thread's events. When the client disconnects, the server cancels
        this generator, and its `finally` cancels the answer."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Optional[dict[str, Any]]] = asyncio.Queue()
        cancel = threading.Event()

        def emit(payload: Optional[dict[str, Any]]) -> None:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, payload)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancel.set()

        def work() -> None:
            try:
                generate(request, emit, cancel)
            finally:
                emit(None)

        threading.Thread(target=work, name="smem-api-answer", daemon=True).start()
        try:
            while (payload := await inbox.get()) is not None:
                yield payload
        finally:
            cancel.set()

    @app.get("/memories", response_model=MemoriesResponse, summary="A memory set and its learned state", responses=_responses(404, 422))
    def memories(
        memory_set: str = Query(description="The memory set.", json_schema_extra={"enum": runtime.sets.names}),
        session: Optional[str] = Query(default=None, pattern=SESSION_PATTERN, description="Show this session's learned state."),
    ) -> MemoriesResponse:
        if memory_set not in runtime.sets.names:
            raise ApiError(404, "memory_set", f"memory_set: unknown memory set {memory_set!r}; available: {', '.join(runtime.sets.names)}")
        if session is None:
            pool = runtime.sets.pool(memory_set)
            learned, answers = pool.learning_state(), 0
        else:
            found = sessions.state(memory_set, session)
            if found is None:
                raise ApiError(404, "session", f"session: no session {session!r} for memory set {memory_set!r} (never used, or evicted)")
            pool, learned, answers = found
        items = pool.memories
        return MemoriesResponse(
            memory_set=memory_set,
            session=session,
            answers=answers,
            memories=[
                MemoryState(
                    **memory.to_record(),
                    tokens=memory.tokens,
                    retrieval_count=float(learned.counts[index]),
                    last_retrieved=_iso(float(learned.last_retrieved[index])),
                )
                for index, memory in enumerate(items)
            ],
            links=[Link(source=items[a].id, target=items[b].id, weight=round(weight, 6)) for a, b, weight in learned.edges()],
        )

    @app.get("/health", response_model=HealthResponse, summary="Model, memory sets, queue and sessions")
    def health() -> HealthResponse:
        return HealthResponse(
            status="ok",
            model=runtime.model_name,
            embedder=runtime.embedder.name,
            memory_sets=runtime.sets.names,
            queue=QueueState(mode="serialised", length=runtime.queue.waiting, limit=settings.max_queue),
            sessions=SessionStats(active=len(sessions), limit=sessions.limit, evicted=sessions.evicted),
            limits=Limits(
                max_new_tokens=settings.max_new_tokens,
                max_message_chars=settings.max_message_chars,
                max_history_messages=settings.max_history_messages,
                max_history_chars=settings.max_history_chars,
                max_body_bytes=settings.max_body_bytes,
            ),
        )

    refuse_other_methods(app)
    return app


def refuse_other_methods(app: FastAPI) -> None:
    """A wrong method on an API path is a 405 in the error shape, with `Allow`, even when a UI
    is mounted at `/` behind the API (Starlette would hand the request to that mount, and the
    UI would answer 404)."""
    allowed: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            allowed.setdefault(route.path, set()).update(route.methods or ())
    for path, methods in allowed.items():
        allow = ", ".join(sorted(methods))

        def refuse(allow: str = allow) -> None:
            raise ApiError(405, None, "method not allowed", headers={"Allow": allow})

        others = sorted({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - methods)
        app.add_api_route(path, refuse, methods=others, include_in_schema=False)


async def not_found(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """For an app mounted behind the API (the UI): a 404 in the API's error shape; its other
    errors keep that app's own form."""
    if exc.status_code == 404:
        return error_response(404, [ErrorDetail(field=None, message=f"no such path: {request.url.path}")])
    return await http_exception_handler(request, exc)


def main(argv: Optional[list[str]] = None) -> None:
    """Serve the API alone (no UI): `python -m smem.serving.api --port 8000 [--model tiny]`."""
    parser = argparse.ArgumentParser(description="Serve the Streaming Memory HTTP API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=None, help="hub id, local folder, 'tiny' or 'packaged' (default: $SMEM_MODEL, else the platform default)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    app = create_api(Runtime.load(args.model))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
