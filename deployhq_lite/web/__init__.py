"""The HTTP API (``deployhq-lite serve``): DeployHQ's routes, JSON in and out.

Routes are thin: they call the same functions as the CLI. Deployments are queued (rows
in the history) and run by a worker (:mod:`queue`): in this process by default, or by
``deployhq-lite worker`` processes. Every route needs HTTP basic authentication
(``--user EMAIL:API_KEY``) against ``[api_users]``, which keeps only SHA-256 hashes.
Refusals are ``422 {"error": ...}`` with DeployHQ's messages; unknown names (and
releases) are 404, naming what was not found (never listing deployment identifiers).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import asgi, views
from .. import config as config_module
from ..config import Settings
from ..engine import Engine
from ..errors import (
    ConfigError,
    DeployHQLiteError,
    ServeError,
    StoreError,
    UnknownNameError,
)
from ..log import get_logger
from ..records import DeploymentStatus
from ..webengines import ThreadEngines
from .bodies import (
    DeploymentRequest,
    NewItem,
    NewRelease,
    ReleaseDeploy,
    RollbackRequest,
    VerifyRequest,
)

log = get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


# -- the app -------------------------------------------------------------------------------


def create_app(settings: Settings, *, worker: bool = True, worker_interval: float = 0.5) -> Any:
    """The ASGI app; with ``worker``, a thread in this process runs queued deployments."""

    stop, wake = threading.Event(), threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = None
        if worker:
            thread = threading.Thread(
                target=_worker, args=(settings, stop, wake, worker_interval), daemon=True
            )
            thread.start()
        yield
        stop.set()
        wake.set()
        if thread is not None:
            thread.join(timeout=60)

    app = FastAPI(
        title="deployhq-lite",
        summary="DeployHQ-compatible deployments and rollbacks, and content releases.",
        lifespan=lifespan,
    )
    engine = ThreadEngines(settings)  # closed as their threads end, after the app's
    user = Depends(_caller)
    _add_error_handlers(app)
    _index_route(app, user)
    _project_routes(app, settings, engine, user)
    _deployment_routes(app, settings, engine, user, wake)
    _verify_routes(app, settings, engine, user, wake)
    _release_routes(app, engine, user)
    return asgi.Front(app, settings)  # authentication, body limits, JSON check, request log


def _index_route(app: FastAPI, user: Any) -> None:
    @app.get("/", include_in_schema=False)
    def index(_: str = user) -> dict[str, Any]:
        """What this API serves: its routes, and where its OpenAPI document is."""
        routes = [
            {"method": method, "path": route.path, "summary": route.summary or route.name}
            for route in app.routes
            if isinstance(route, APIRoute) and route.include_in_schema
            for method in sorted(route.methods or ())
        ]
        return {
            "name": app.title,
            "openapi": app.openapi_url,
            "docs": app.docs_url,
            "routes": routes,
        }


def _worker(
    settings: Settings, stop: threading.Event, wake: threading.Event, interval: float
) -> None:
    from ..queue import run_worker  # only when serve runs a worker in its process

    with Engine(settings) as engine:
        run_worker(engine, once=False, interval=interval, stop=stop, wake=wake)


def _caller(request: Request) -> str:
    """The caller's email, authenticated in front of every route (:mod:`asgi`)."""
    email = request.scope.get(asgi.USER)
    if not isinstance(email, str):  # only an app served without its front gets here
        raise ApiError(401, asgi.AUTH_REQUIRED)
    return email


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="deployhq-lite"'} if exc.status == 401 else None
        return JSONResponse({"error": exc.message, **exc.extra}, exc.status, headers=headers)

    @app.exception_handler(DeployHQLiteError)
    async def refused(request: Request, exc: DeployHQLiteError) -> JSONResponse:
        body = views.error_body(exc)
        not_found = isinstance(exc, UnknownNameError) or body.get("error_code") == "not_found"
        status = 503 if isinstance(exc, StoreError) else 404 if not_found else 422
        return JSONResponse(body, status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":  # no route: say which
            message = f"no route {request.method} {request.url.path}"
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        return JSONResponse({"error": "; ".join(problems) or "malformed request"}, 422)


def project_key(settings: Settings, project: str) -> str:
    """A project's permalink from its permalink or its identifier (else 404)."""
    if project in settings.projects:
        return project
    for key in settings.projects:
        if config_module.project_identifier(key) == project:
            return key
    raise UnknownNameError("project", project, settings.projects)


def server_or_group_key(settings: Settings, project: str, name: str) -> str:
    """A server or server group key from its key or its identifier (else 404)."""
    config = settings.get_project(project)
    for key in [*config.servers, *config.server_groups]:
        if name in (key, config_module.server_identifier(project, key)):
            return key
    settings.check_destination(project, name)  # raises, listing them
    return name


def _project_routes(
    app: FastAPI, settings: Settings, engine: Callable[[], Engine], user: Any
) -> None:
    @app.get("/projects")
    def projects(_: str = user) -> list[dict[str, Any]]:
        """Every project, with its servers and server groups."""
        return views.projects_view(engine())

    @app.get("/projects/{project}")
    def project(project: str, _: str = user) -> dict[str, Any]:
        """A project: permalink, identifier, repository, servers and server groups."""
        return views.project_view(engine(), project_key(settings, project))

    @app.get("/projects/{project}/servers")
    def servers(project: str, _: str = user) -> list[dict[str, Any]]:
        """A project's servers (identifier, protocol_type, server_path, last_revision...)."""
        return views.servers_view(engine(), project_key(settings, project))

    @app.get("/projects/{project}/server_groups")
    def server_groups(project: str, _: str = user) -> list[dict[str, Any]]:
        """A project's server groups, each naming its servers."""
        return views.groups_view(engine(), project_key(settings, project))


def _deployment_routes(
    app: FastAPI,
    settings: Settings,
    engine: Callable[[], Engine],
    user: Any,
    wake: threading.Event,
) -> None:
    # Longer than most functions: one short nested function per route, registered here.
    @app.post("/projects/{project}/deployments/{deployment}/rollback", status_code=201)
    def rollback(
        project: str, deployment: str, body: RollbackRequest | None = None, _: str = user
    ) -> dict[str, Any]:
        """Create a rollback deployment (DeployHQ's "Rollback deployment via API")."""
        body = body or RollbackRequest()
        created = engine().queue_rollback(
            project_key(settings, project),
            deployment,
            mode=body.mode,
            copy_config_files=body.copy_config_files,
            run_build_commands=body.run_build_commands,
        )
        wake.set()
        if created.is_preview:
            return body.answer({"identifier": created.identifier, "status": created.status.value})
        return body.answer(created.to_json(engine().members(created)))

    @app.get("/projects/{project}/deployments/{deployment}/preview")
    def preview(project: str, deployment: str, _: str = user) -> dict[str, Any]:
        """A preview's progress; its file changes once it is generated."""
        found = engine().get_deployment(project_key(settings, project), deployment)
        if found.status is DeploymentStatus.PREVIEW_PENDING:
            return {"identifier": found.identifier, "status": found.status.value}
        return engine().get_preview(found.project, found.identifier).to_json()

    @app.post("/projects/{project}/deployments", status_code=201)
    def create(project: str, request: DeploymentRequest, _: str = user) -> dict[str, Any]:
        """Queue a deployment (or a preview) to a server or server group."""
        key = project_key(settings, project)
        name = request.parent_identifier or request.server
        if name is None:
            raise ApiError(422, "parent_identifier: give a server or server group")
        target = server_or_group_key(settings, key, name)
        revision = request.end_revision or request.branch
        created = engine().queue_deployment(
            key,
            target,
            revision=revision,
            mode=request.mode,
            config_files_only=request.config_files_only,
            copy_config_files=request.copy_config_files,
            run_build_commands=request.run_build_commands,
            repair=request.repair,
            delete_extra=request.delete_extra,
            full=request.full,
        )
        wake.set()
        return request.answer(created.to_json(engine().members(created)))

    @app.get("/projects/{project}/deployments")
    def index(
        project: str,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        per_page: Annotated[int, Query(ge=1, le=500)] = 30,
        _: str = user,
    ) -> dict[str, Any]:
        """The project's deployments, newest first, a page at a time."""
        key = project_key(settings, project)
        found = engine().list_deployments(key, limit=per_page, offset=(page - 1) * per_page)
        records = [d.to_json(engine().members(d)) for d in found]
        total = engine().history.count(key)
        return views.page_of(records, page=page, per_page=per_page, total=total)

    @app.get("/projects/{project}/deployments/{deployment}")
    def show(project: str, deployment: str, _: str = user) -> dict[str, Any]:
        """One deployment with its per-file outcomes (each server's, for a group)."""
        found = engine().get_deployment(project_key(settings, project), deployment)
        return engine().describe(found)


def _verify_routes(
    app: FastAPI,
    settings: Settings,
    engine: Callable[[], Engine],
    user: Any,
    wake: threading.Event,
) -> None:
    @app.post("/projects/{project}/servers/{server}/verify", status_code=201)
    def queue_verify(
        project: str, server: str, body: VerifyRequest | None = None, _: str = user
    ) -> dict[str, Any]:
        """Queue a verification of a server against its latest deployment (a worker runs
        it); the answer's ``identifier`` is for ``GET .../verify/<identifier>``."""
        key = project_key(settings, project)
        queued = engine().queue_verification(
            key, server_or_group_key(settings, key, server), fast=(body or VerifyRequest()).fast
        )
        wake.set()
        return queued.to_json()

    @app.get("/projects/{project}/servers/{server}/verify/{verification}")
    def show_verify(project: str, server: str, verification: str, _: str = user) -> dict[str, Any]:
        """A verification: ``pending``, ``running``, or its result (``in_sync``,
        ``differences``...)."""
        key = project_key(settings, project)
        found = engine().get_verification(key, verification)
        if found.server != server_or_group_key(settings, key, server):
            raise UnknownNameError("verification", verification, None, scope=f"server {server}")
        return found.to_json()


def _release_routes(app: FastAPI, engine: Callable[[], Engine], user: Any) -> None:
    # Longer than most functions: one short nested function per route, registered here.
    @app.post("/stacks/{stack}/releases", status_code=201)
    def create_release(stack: str, body: NewRelease, email: str = user) -> dict[str, Any]:
        return engine().create_release(stack, body.name, user=email).to_json()

    @app.get("/stacks/{stack}/releases")
    def list_releases(
        stack: str,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        per_page: Annotated[int, Query(ge=1, le=500)] = 30,
        email: str = user,
    ) -> dict[str, Any]:
        """The releases the user may see, oldest first, a page at a time."""
        found = engine().list_releases(stack, user=email)
        records = [r.to_json() for r in found[(page - 1) * per_page :][:per_page]]
        return views.page_of(records, page=page, per_page=per_page, total=len(found))

    @app.get("/stacks/{stack}/releases/{release}")
    def show_release(stack: str, release: str, email: str = user) -> dict[str, Any]:
        return engine().get_release(stack, release, user=email).to_json()

    @app.post("/stacks/{stack}/releases/{release}/items", status_code=201)
    def add_item(stack: str, release: str, body: NewItem, email: str = user) -> dict[str, Any]:
        return (
            engine()
            .add_release_item(
                stack,
                release,
                body.uid,
                user=email,
                version=body.version,
                locales=body.locales,
                action=body.action,
                with_references=body.with_references,
            )
            .to_json()
        )

    @app.post("/stacks/{stack}/releases/{release}/deploy")
    def deploy_release(
        stack: str, release: str, body: ReleaseDeploy, email: str = user
    ) -> dict[str, Any]:
        """Deploy a release now (the publish result), or schedule it (the release)."""
        return (
            engine()
            .deploy_release(
                stack,
                release,
                environment=body.environment,
                user=email,
                locales=body.locales,
                schedule_at=body.schedule_at,
            )
            .to_json()
        )

    @app.post("/stacks/{stack}/releases/{release}/rollback", status_code=201)
    def rollback_release(stack: str, release: str, email: str = user) -> dict[str, Any]:
        """Your rollback release of a deployed release (made once, then returned)."""
        return engine().rollback_release(stack, release, user=email).to_json()

    @app.delete("/stacks/{stack}/releases/{release}")
    def delete_release(stack: str, release: str, email: str = user) -> dict[str, Any]:
        return {
            **engine().delete_release(stack, release, user=email).to_json(),
            "deleted": True,
        }


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    worker: bool = True,
    certfile: str | None = None,
    keyfile: str | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Run the API with uvicorn until interrupted (HTTPS with ``certfile``);
    ``on_listening`` gets its URL once the port is taken."""
    import uvicorn  # loads for serve only, not for create_app in tests

    if not settings.api_users:
        where = settings.config_path or "config"
        raise ConfigError(
            f"{where}: no [api_users]: every route needs one; "
            "create a key with `deployhq-lite api-keys create EMAIL`"
        )
    config = uvicorn.Config(
        create_app(settings, worker=worker),
        log_level="warning",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    try:
        config.load()  # reads the certificate and key now: a bad one is one line
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        if not certfile:
            raise
        what = f"--certfile {certfile}" + (f" --keyfile {keyfile}" if keyfile else "")
        raise ServeError(f"{what}: cannot load the certificate and key ({_why(exc)})") from None
    listener = _listen(host, port)
    if on_listening is not None:
        scheme = "https" if certfile else "http"
        shown = f"[{host}]" if ":" in host else host
        on_listening(f"{scheme}://{shown}:{listener.getsockname()[1]}")
    with listener:
        uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):  # OpenSSL's words ("PEM lib") say little
        return "not a PEM certificate and its matching private key"
    if isinstance(exc, OSError) and exc.strerror:  # create_server's adds the address
        return exc.strerror.partition(" (while attempting to bind")[0]
    return str(exc)
