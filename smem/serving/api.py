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
import json
import logging
import threading
import time
from collections.abc import AsyncIterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, ContextManager, Iterator, Mapping, Optional

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smem.serving.api_schema import (
    CHAT_PATH,
    LABEL_MAX_CHARS,
    SESSION_PATTERN,
    ErrorBody,
    ErrorDetail,
    ErrorResponse,
    HealthResponse,
    Limits,
    Link,
    MemoriesResponse,
    MemoryState,
    QueueState,
    SessionCreated,
    SessionRequest,
    SessionStats,
    StreamEvent,
    chat_request_model,
)
from smem.generation.engine import stream_keywords
from smem.generation.events import Done, Event
from smem.generation.settings import ModelSettings
from smem.memory.pool import MemoryPool
from smem.memory.records import MemoryFileError
from smem.memory.wording import counted
from smem.serving.queueing import Cancelled
from smem.serving.runtime import Runtime
from smem.serving import prompt_budget, uploads
from smem.serving.session_store import SessionStore, SQLiteSessionStore
from smem.serving.sessions import SessionNotFound, Sessions
from smem.serving.api_schema import ApiSettings

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


class ErrorJSONResponse(JSONResponse):
    """Errors echo the input at fault, which may hold a lone surrogate (`"\\ud800"` is valid JSON
    but not encodable UTF-8): escaping non-ASCII keeps such an answer a 422, not a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(status: int, details: list[ErrorDetail], headers: Optional[Mapping[str, str]] = None) -> JSONResponse:
    return ErrorJSONResponse(ErrorResponse(error=error_body(status, details)).model_dump(), status_code=status, headers=headers)


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
    elif exc.status_code == 405:
        # Starlette answers with the methods of the first route whose path matches; a path served
        # by several routes (GET and DELETE /sessions/{id}) must name them all.
        allowed = sorted({method for route in request.app.routes if getattr(route, "methods", None) and route.path_regex.match(request.url.path) for method in route.methods})
        detail = ErrorDetail(field=None, message=str(exc.detail))
        return error_response(405, [detail], headers={"Allow": ", ".join(allowed)})
    elif exc.status_code == 400:
        detail = ErrorDetail(field="body", message=f"body: {exc.detail}")
    else:
        detail = ErrorDetail(field=None, message=str(exc.detail))
    return error_response(exc.status_code, [detail], headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, [ErrorDetail(field=None, message="internal server error")])


class BodyLimit:
    """Refuses a body over its route's limit (413) as soon as its declared length or the bytes
    received so far show it, so a huge body is never buffered whole. Only the API's routes
    that take a body: a mounted UI (file uploads) keeps its own limits (Gradio's
    `max_file_size`). (Starlette's own limiter answers in plain text, not in this API's error
    shape.)"""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        self.app = app
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        received = 0

        def too_large() -> ApiError:
            return ApiError(413, "body", f"body: larger than the {limit} bytes this server accepts here")

        async def limited() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                raise too_large()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large()
            return message

        await self.app(scope, limited, send)


ERROR_DESCRIPTIONS = {
    400: "The body is not JSON, or not UTF-8.",
    404: "Unknown memory set, or a session that was never created, has expired or was deleted.",
    413: "The body is larger than any valid request.",
    429: "This client already has its share of answers queued; retry after `Retry-After` seconds.",
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


# -- what the routes share ---------------------------------------------------------------

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


SWEEP_EVERY_S = 3600
"""How often expired sessions are deleted; until then they only read as absent (chosen: an hour
is nothing against the 30-day lifetime, and a sweep is one indexed DELETE)."""

RETRY_AFTER_S = "5"
"""`Retry-After` on 429 and 503 (chosen: a tiny-model answer takes well under a second and a GPU
answer tens of seconds, so 5 s neither hammers the queue nor leaves a free model idle for long)."""

Emit = Callable[[Optional[dict[str, Any]]], None]
"""Posts one SSE payload to the client's stream (`None` ends it); callable from any thread."""
Admitted = tuple[Any, str, prompt_budget.FittedPrompt]
"""An admitted chat request, the client it counts against, and its history fitted to the budget."""


@dataclass
class ApiState:
    """What every route group reads: the runtime (model, memory sets, generation queue), the
    limits, the sessions, where answers run, and the one thread the model works on."""

    runtime: Runtime
    settings: ApiSettings
    sessions: Sessions
    generate: Generate
    model_thread: ThreadPoolExecutor
    last_sweep: float = 0.0

    def sweep(self) -> None:
        """Delete expired sessions, at most once per `SWEEP_EVERY_S`."""
        now = time.monotonic()
        if now - self.last_sweep > SWEEP_EVERY_S:
            self.last_sweep = now
            removed = self.sessions.sweep()
            if removed:
                log.info("deleted %d expired sessions", removed)

    def pool_for(self, request: Any) -> ContextManager[MemoryPool]:
        """The session's pool, held for one answer (its learning kept if the answer ends normally),
        else a fresh pool of the request's memory set."""
        return self.sessions.checkout(request.session) if request.session else nullcontext(self.runtime.sets.pool(request.memory_set))

    def session_state(self, session: str) -> tuple[MemoryPool, Any, int, str]:
        try:
            return self.sessions.state(session)
        except SessionNotFound as exc:
            raise ApiError(404, "session", f"session: {exc}") from None

    def unknown_set(self, memory_set: str) -> ApiError:
        return ApiError(404, "memory_set", f"memory_set: unknown memory set {memory_set!r}; available: {', '.join(self.runtime.sets.names)}")

    def created(self, session_id: str, pool: MemoryPool, label: str) -> SessionCreated:
        return SessionCreated(session=session_id, memory_set=label, memories=len(pool), ttl_s=self.settings.session_ttl_s)


# -- answering: admit, queue, stream ------------------------------------------------------


def engine_arguments(request: Any, fitted: prompt_budget.FittedPrompt) -> dict[str, Any]:
    """The request's knobs as `StreamingEngine.stream` keywords (history as fitted to the budget)."""
    return {"message": request.message, "history": fitted.history, **stream_keywords(request)}


def answer(state: ApiState, request: Any, fitted: prompt_budget.FittedPrompt, emit: Emit, cancel: threading.Event) -> None:
    """Runs on the one model thread. Answers are serialised anyway, and keeping the model's
    and the pools' allocations on one thread lets the allocator reuse one arena instead of
    growing one per request thread (measured: RSS settles instead of creeping)."""
    if fitted.trimmed is not None:
        emit(fitted.trimmed.to_sse())
    with state.pool_for(request) as pool:
        stream = state.generate(pool, engine_arguments(request, fitted), cancel)
        try:
            for event in stream:
                if isinstance(event, Done) and event.learned is not None and len(event.learned) == len(pool):
                    pool.set_learning_state(event.learned)
                emit(event.to_sse())
        finally:
            stream.close()


def queue_and_answer(state: ApiState, admitted: Admitted, emit: Emit, cancel: threading.Event) -> None:
    """One answer, from its request's thread: wait for the model, then have the model thread
    stream it. Queue slot before session lock, always, so two answers never wait on each other."""
    request, client, fitted = admitted
    try:
        on_wait = lambda ahead: emit({"type": "queued", "position": ahead})  # noqa: E731
        with state.runtime.queue.slot(on_wait=on_wait, cancel=cancel, client=client):
            if cancel.is_set():
                raise Cancelled()
            state.model_thread.submit(answer, state, request, fitted, emit, cancel).result()
    except Cancelled:
        log.info("client left while queued (session %s)", request.session)
    except Exception as exc:
        log.exception("answer failed (session %s)", request.session)
        detail = ErrorDetail(field=None, message=f"generation failed: {type(exc).__name__}")
        emit({"type": "error", "error": error_body(500, [detail]).model_dump()})


def admit(state: ApiState, http: Request, request: Any) -> Admitted:
    """Refuse before the stream starts (after that the status is already 200): an unknown
    session, a set that does not match it, a message over its token limit, a full queue.
    Returns the request, the client the answer is counted against (its session, else its
    address) and the history that fits the prompt budget. The queue check and the later
    `slot` are not one step, so a burst may overshoot a limit by the few requests admitted at
    the same instant; callers that leave free their place at once."""
    settings, runtime = state.settings, state.runtime
    if request.session is not None:
        try:
            label = state.sessions.label(request.session)
        except SessionNotFound as exc:
            raise ApiError(404, "session", f"session: {exc}") from None
        if request.memory_set is not None and request.memory_set != label:
            raise ApiError(422, "memory_set", f"memory_set: session uses {label!r}, not {request.memory_set!r}; omit memory_set or create another session")
    elif request.memory_set is None:
        # The original Streaming Memory body names no set: it gets the default one.
        request.memory_set = runtime.sets.default
    try:
        fitted = prompt_budget.fit(runtime.tokenizer, request.message, [m.model_dump() for m in request.history], settings)
    except prompt_budget.MessageTooLong as exc:
        raise ApiError(422, "message", str(exc)) from None
    client = f"session:{request.session}" if request.session else f"address:{http.client.host if http.client else '?'}"
    if runtime.queue.waiting >= settings.max_queue:
        message = f"the queue is full ({counted(runtime.queue.waiting, 'answer')} waiting); try again shortly"
        raise ApiError(503, None, message, headers={"Retry-After": RETRY_AFTER_S})
    if runtime.queue.held_by(client) >= settings.max_queue_per_client:
        message = f"this client already has {counted(settings.max_queue_per_client, 'answer')} generating or queued; wait for one to finish"
        raise ApiError(429, None, message, headers={"Retry-After": RETRY_AFTER_S})
    return request, client, fitted


def start_answer(state: ApiState, admitted: Admitted, inbox: "asyncio.Queue[Optional[dict[str, Any]]]", cancel: threading.Event) -> None:
    """Run the answer on a worker thread that posts each event to `inbox` on this event loop,
    then `None`; if the loop is gone (nobody is listening any more) it cancels the answer."""
    loop = asyncio.get_running_loop()

    def emit(payload: Optional[dict[str, Any]]) -> None:
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, payload)
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            cancel.set()

    def work() -> None:
        try:
            queue_and_answer(state, admitted, emit, cancel)
        finally:
            emit(None)

    threading.Thread(target=work, name="smem-api-answer", daemon=True).start()


def chat_routes(app: FastAPI, state: ApiState) -> None:
    """`POST /chat/stream`. The request model is built from the limits, so the route is made here."""
    ChatRequest = chat_request_model(state.settings, lambda: state.runtime.sets.names)

    def admit_request(http: Request, request: ChatRequest) -> Admitted:  # type: ignore[valid-type]
        # The route takes the body only through this dependency: naming it twice would
        # validate it, and list its errors, twice.
        return admit(state, http, request)

    @app.post(
        CHAT_PATH,
        response_class=EventSourceResponse,
        summary="Stream an answer while memories are re-retrieved",
        description=STREAM_DESCRIPTION,
        responses=_responses(400, 404, 413, 422, 429, 503, streaming=True),
    )
    async def chat_stream(admitted: Admitted = Depends(admit_request)) -> AsyncIterable[StreamEvent]:
        """Relays the worker thread's events. When the client disconnects, the server cancels
        this generator, and its `finally` cancels the answer."""
        inbox: asyncio.Queue[Optional[dict[str, Any]]] = asyncio.Queue()
        cancel = threading.Event()
        start_answer(state, admitted, inbox, cancel)
        try:
            while (payload := await inbox.get()) is not None:
                yield payload
        finally:
            cancel.set()


# -- reading memories and sessions --------------------------------------------------------


def memories_response(pool: MemoryPool, learned: Any, answers: int, label: str, session: Optional[str]) -> MemoriesResponse:
    items = pool.memories
    return MemoriesResponse(
        memory_set=label,
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


def memory_routes(app: FastAPI, state: ApiState) -> None:
    """`GET /memories` (a set, or a session's view of it) and `GET /sessions/{id}`."""
    names = state.runtime.sets.names

    @app.get("/memories", response_model=MemoriesResponse, summary="A memory set and its learned state", responses=_responses(404, 422))
    def memories(
        memory_set: str = Query(description="The memory set.", json_schema_extra={"enum": names}),
        session: Optional[str] = Query(
            default=None, pattern=SESSION_PATTERN, description="Show this session's learned state (it must use `memory_set`; or see `GET /sessions/{id}`)."
        ),
    ) -> MemoriesResponse:
        if memory_set not in state.runtime.sets.names:
            raise state.unknown_set(memory_set)
        if session is None:
            pool = state.runtime.sets.pool(memory_set)
            return memories_response(pool, pool.learning_state(), 0, memory_set, None)
        pool, learned, answers, label = state.session_state(session)
        if memory_set != label:
            raise ApiError(404, "memory_set", f"memory_set: session uses {label!r}, not {memory_set!r}")
        return memories_response(pool, learned, answers, label, session)

    @app.get("/sessions/{session}", response_model=MemoriesResponse, summary="A session's memories and learned state", responses=_responses(404, 422))
    def session_memories(session: str = Path(pattern=SESSION_PATTERN)) -> MemoriesResponse:
        pool, learned, answers, label = state.session_state(session)
        return memories_response(pool, learned, answers, label, session)


# -- making, exporting and deleting sessions ----------------------------------------------


def session_routes(app: FastAPI, state: ApiState) -> None:
    """`POST /sessions`, `POST /imports`, `GET /sessions/{id}/export`, `DELETE /sessions/{id}`."""

    @app.post(
        "/sessions",
        response_model=SessionCreated,
        status_code=201,
        summary="Create a session: a private, durable copy of a memory set (or of your memories)",
        responses=_responses(400, 404, 413, 422),
    )
    def create_session(body: SessionRequest) -> SessionCreated:
        state.sweep()
        if (body.memory_set is None) == (body.memories is None):
            raise ApiError(422, "memory_set", "memory_set: give exactly one of memory_set or memories")
        if body.memory_set is not None:
            if body.memory_set not in state.runtime.sets.names:
                raise state.unknown_set(body.memory_set)
            pool, label = state.runtime.sets.pool(body.memory_set), body.memory_set
        else:
            try:
                pool = uploads.load_records(state.runtime.sets, body.memories, state.settings)
            except MemoryFileError as exc:
                raise ApiError(422, "memories", f"memories: {exc}") from None
            label = body.label
        return state.created(state.sessions.create(pool, label), pool, label)

    @app.post(
        "/imports",
        response_model=SessionCreated,
        status_code=201,
        summary="Create a session from an exported state file (or a memory-set JSON file)",
        responses=_responses(413, 422),
        openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def import_session(http: Request, label: str = Query(default="imported", max_length=LABEL_MAX_CHARS)) -> SessionCreated:
        raw = await http.body()
        try:
            pool = await asyncio.to_thread(uploads.load_upload, state.runtime.sets, raw, state.settings)
        except MemoryFileError as exc:
            raise ApiError(422, "body", f"body: {exc}") from None
        state.sweep()
        return state.created(await asyncio.to_thread(state.sessions.create, pool, label), pool, label)

    @app.get(
        "/sessions/{session}/export",
        summary="A session's memories, vectors and learned state as a pool file (.npz)",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}, "description": "The pool file."}, **_responses(404, 422)},
    )
    def export_session(session: str = Path(pattern=SESSION_PATTERN)) -> Response:
        try:
            content, label = state.sessions.export(session)
        except SessionNotFound as exc:
            raise ApiError(404, "session", f"session: {exc}") from None
        # 40 characters (chosen): a file name that stays readable in a download bar.
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label)[:40] or "session"
        return Response(content, media_type="application/octet-stream", headers={"Content-Disposition": f'attachment; filename="smem-{slug}.npz"'})

    @app.delete("/sessions/{session}", status_code=204, summary="Delete a session and everything it learned", responses=_responses(404, 422))
    def delete_session(session: str = Path(pattern=SESSION_PATTERN)) -> Response:
        if not state.sessions.delete(session):
            raise ApiError(404, "session", f"session: no session {session!r} (never created, expired or deleted)")
        return Response(status_code=204)


def health_routes(app: FastAPI, state: ApiState) -> None:
    """`GET /health`: model, memory sets, queue, sessions and every limit in force."""

    @app.get("/health", response_model=HealthResponse, summary="Model, memory sets, queue and sessions")
    def health() -> HealthResponse:
        runtime, settings = state.runtime, state.settings
        return HealthResponse(
            status="ok",
            model=runtime.model_name,
            can_think=runtime.can_think,
            embedder=runtime.embedder.name,
            memory_sets=runtime.sets.names,
            queue=QueueState(mode="serialised", length=runtime.queue.waiting, limit=settings.max_queue),
            sessions=SessionStats(stored=len(state.sessions), ttl_s=settings.session_ttl_s),
            limits=Limits(**{name: getattr(settings, name) for name in Limits.model_fields}),
        )


# -- the app --------------------------------------------------------------------------------


def create_api(
    runtime: Runtime,
    settings: Optional[ApiSettings] = None,
    generate: Optional[Generate] = None,
    store: Optional[SessionStore] = None,
) -> FastAPI:
    """The API over `runtime` (limits from `settings`, else from `SMEM_*` variables).
    Sessions live in `store` (default: SQLite under `$SMEM_STATE_DIR`); the generation queue is
    the runtime's, shared with any UI mounted on the same app. `generate` is where answers run
    (default: this process)."""
    settings = settings or ApiSettings.from_env()
    store = SQLiteSessionStore(ttl_s=settings.session_ttl_s) if store is None else store
    state = ApiState(
        runtime=runtime,
        settings=settings,
        sessions=Sessions(store, runtime.embedder),
        generate=generate or generate_here(runtime),
        model_thread=ThreadPoolExecutor(max_workers=1, thread_name_prefix="smem-api-model"),
    )
    app = FastAPI(
        title="Streaming Memory API",
        version="1.0.0",
        description="Hebbian memory re-retrieved while the model writes; see docs/api.md.",
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(
        BodyLimit,
        limits={CHAT_PATH: settings.max_body_bytes, "/sessions": settings.max_upload_bytes, "/imports": settings.max_upload_bytes},
    )
    for add_routes in (chat_routes, memory_routes, session_routes, health_routes):
        add_routes(app, state)
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
    parser.add_argument("--port", type=int, default=8000)  # uvicorn's own default; the app keeps 7860
    parser.add_argument("--model", default=None, help="hub id, local folder, 'tiny' or 'packaged' (default: $SMEM_MODEL, else the platform default)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    runtime = Runtime.load(args.model)
    if ModelSettings().read_ahead:
        runtime.start_read_ahead()
    app = create_api(runtime)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
