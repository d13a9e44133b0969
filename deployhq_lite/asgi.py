"""What stands in front of every route of the HTTP API (:mod:`web`), as ASGI middleware.

In order: the request is timed and, once answered, logged as one ``request.served`` event
(method, path, status, milliseconds; never headers or bodies); the caller is
authenticated (HTTP basic against ``[api_users]``; 401 before anything else, even before
the body is read, and for every path); the body is read, at most ``MAX_BODY`` bytes
whether its length is declared or chunked (413); a JSON body that does not parse is 422
saying where. A route then finds the caller's email in the scope, under ``USER``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import Settings
from .log import get_logger

MAX_BODY = 64 * 1024  # bytes of a request body
AUTH_REQUIRED = "authentication required: --user EMAIL:API_KEY"
TOO_LARGE = f"request body too large (at most {MAX_BODY} bytes)"
FORM = "application/x-www-form-urlencoded"
USER = "deployhq_lite.user"  # the scope key of the authenticated caller's email
_DUMMY_HASH = hashlib.sha256(b"no such user").hexdigest()

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Refused(Exception):
    """A request turned away before it reaches a route: ``status`` and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Front:
    """The middleware (see the module's docstring) around the FastAPI app."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, sending)
        finally:
            log.info(
                "request.served",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        email = authenticate(self.settings, _header(scope, b"authorization"))
        if email is None:
            challenge = (b"www-authenticate", b'Basic realm="deployhq-lite"')
            await respond(send, 401, {"error": AUTH_REQUIRED}, [challenge])
            return
        try:
            body = await read_body(scope, receive)
            content_type = _header(scope, b"content-type")
            if _media_type(content_type) == FORM:  # as JSON, which the routes read
                body = json.dumps(parse_form(body)).encode()
                scope = _with_headers(scope, {b"content-type": b"application/json"})
            else:
                check_json(body, content_type)
        except Refused as exc:
            await respond(send, exc.status, {"error": exc.message})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the client's disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**_without_format(scope), USER: email}, replay, send)


def authenticate(settings: Settings, header: str) -> str | None:
    """The caller's email as ``[api_users]`` spells it, from ``Authorization: Basic``
    (emails compared in any case, keys by SHA-256 in constant time); None if the
    credentials are missing or wrong."""
    scheme, _, token = header.partition(" ")
    email, key = "", ""
    if scheme.lower() == "basic":
        try:
            email, _, key = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            email, key = "", ""
    wanted = email.casefold()  # as DeployHQ: an email in any case
    name = next((e for e in settings.api_users if e.casefold() == wanted), None)
    found = settings.api_users.get(name) if name is not None else None
    offered = hashlib.sha256(key.encode()).hexdigest()
    ok = hmac.compare_digest(offered, found.key_sha256 if found else _DUMMY_HASH)
    return name if found and key and ok else None


async def read_body(scope: Scope, receive: Receive) -> bytes:
    """The whole body, refused (413) as soon as it is over ``MAX_BODY`` bytes: by its
    declared length before a byte is read, or as a chunked body arrives."""
    length = _header(scope, b"content-length")
    if length and (not length.isdigit() or int(length) > MAX_BODY):
        raise Refused(413, TOO_LARGE)
    chunks: list[bytes] = []
    seen, more = 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > MAX_BODY:
            raise Refused(413, TOO_LARGE)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def parse_form(body: bytes) -> dict[str, Any]:
    """A form-encoded body as Rails reads one: ``mode=preview``,
    ``deployment[mode]=preview`` (nested), ``locales[]=en-us`` (a list)."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise Refused(422, "request body is not valid form data") from None
    data: dict[str, Any] = {}
    for key, value in pairs:
        found = _FORM_KEY.fullmatch(key)
        if found is None:
            raise Refused(422, f"request body: form field {key!r} is not a parameter name")
        path = [found[1], *re.findall(r"\[([^\[\]]*)\]", found[2])]
        _put(data, path, value, key)
    return data


_FORM_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")


def _put(data: dict[str, Any], path: list[str], value: str, key: str) -> None:
    where: Any = data
    for part, after in zip(path, [*path[1:], None], strict=True):
        if after is None:
            if part == "" and isinstance(where, list):
                where.append(value)
            elif part != "" and isinstance(where, dict):
                where[part] = value
            else:
                raise Refused(422, f"request body: form field {key!r} conflicts with another")
            return
        made: Any = [] if after == "" else {}
        if not isinstance(where, dict) or part == "":
            raise Refused(422, f"request body: form field {key!r} conflicts with another")
        where = where.setdefault(part, made)
        if type(where) is not type(made):
            raise Refused(422, f"request body: form field {key!r} conflicts with another")


def check_json(body: bytes, content_type: str) -> None:
    """Refuse (422, saying where) a JSON body, or one without a content type, that
    does not parse; the routes' models then say what is wrong with one that does."""
    kind = _media_type(content_type)
    if not body.strip() or not (kind in ("", "application/json") or kind.endswith("+json")):
        return
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise Refused(422, f"request body is not valid JSON ({where})") from None
    except UnicodeDecodeError:
        raise Refused(422, "request body is not valid JSON (not UTF-8)") from None


async def respond(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _with_headers(scope: Scope, replaced: dict[bytes, bytes]) -> Scope:
    kept = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in replaced]
    kept = [(k, v) for k, v in kept if k.lower() != b"content-length"]
    return {**scope, "headers": [*kept, *replaced.items()]}


def _without_format(scope: Scope) -> Scope:
    """A path with Rails' ``.json`` format suffix as the same path without it."""
    path: str = scope["path"]
    if not path.endswith(".json") or path in ("/openapi.json", "/.json"):
        return scope
    raw = scope.get("raw_path") or path.encode()
    return {**scope, "path": path[:-5], "raw_path": raw[:-5] if raw.endswith(b".json") else raw}


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""
