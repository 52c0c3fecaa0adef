"""The webhook server: HTTPS, one handler per path, bounded requests, metrics.

As controller-runtime's ``pkg/webhook/server.go``: the manager runs it on every replica
(webhooks need no leader), it listens on port 9443 of every interface by default, serves
the pair ``tls.crt``/``tls.key`` from a certificate directory (reloaded when it changes:
:mod:`reconciler.webhook.certwatcher`), and a path is registered once. Its readiness
check (:meth:`WebhookServer.started_check`) passes once a TLS handshake with the server
succeeds, as controller-runtime's ``StartedChecker`` dials it.

The server does the HTTP part; a :data:`Handler` sees only the decoded review and returns
the review to send. Per request, in order:

1. a path nobody registered → 404; a method other than POST → 405;
2. a body over ``max_request_bytes`` → 413 (controller-runtime's admission handler caps
   bodies at 7 MiB: two objects of at most 3 MiB, the API server's write limit, and
   1 MiB for the rest of the review);
3. a ``Content-Type`` other than ``application/json``, a body that is not JSON, or not a
   JSON object → 400 (controller-runtime's wording for the content type);
4. the handler runs, bounded by ``request_timeout`` → 503 past it (what Go's
   ``http.TimeoutHandler`` answers); a handler raising :class:`BadRequest` → 400;
5. a handler that fails unexpectedly → 500 and ``controller_runtime_webhook_panics_total``
   (controller-runtime recovers a panicking handler); the handlers of this package catch
   their own failures and answer in the review instead (:class:`PanicRecovered`).

Every refusal in steps 1–5 is an HTTP error whose body is a ``metav1.Status``: the API
server's webhook client decodes a non-2xx body as a Status and shows its message in the
error it returns (``failed calling webhook …``), so the user reads why. Each is logged
on one line, without a traceback except in step 5. Refusals by a handler (a denial, an
object that does not parse) are HTTP 200 reviews, as controller-runtime answers them.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import orjson
import structlog
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from reconciler.probes import ListenError, listen_on_all_interfaces
from reconciler.webhook.certwatcher import DEFAULT_CERT_POLL_INTERVAL, CertWatcher
from reconciler.webhook.metrics import WebhookMetrics

__all__ = [
    "DEFAULT_CERT_DIR",
    "DEFAULT_CERT_NAME",
    "DEFAULT_KEY_NAME",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_REQUEST_TIMEOUT",
    "BadRequest",
    "Handler",
    "PanicRecovered",
    "WebhookServer",
    "WebhookServerOptions",
    "status_body",
]

log = structlog.get_logger("reconciler.webhook")

DEFAULT_PORT = 9443
"""controller-runtime's ``webhook.DefaultPort``."""
DEFAULT_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")
"""controller-runtime's default: ``<os.TempDir()>/k8s-webhook-server/serving-certs``."""
DEFAULT_CERT_NAME = "tls.crt"
DEFAULT_KEY_NAME = "tls.key"
DEFAULT_MAX_REQUEST_BYTES = 7 * 1024 * 1024
"""controller-runtime's ``maxRequestSize`` for admission requests (see the module doc)."""
DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a request may take: the API server waits at most 30 s for a webhook (the cap
on ``timeoutSeconds``; its default is 10 s), so an answer after that reaches nobody.
controller-runtime has no such bound (only a 32 s ``ReadHeaderTimeout``)."""
# In-flight requests get this long when the server stops (controller-runtime: 1 minute,
# but the manager's shutdown budget is shorter).
_SHUTDOWN_TIMEOUT = 5.0

Handler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
"""Takes the decoded request body (an AdmissionReview or ConversionReview) and returns
the review to send back. Handlers do not see HTTP; see :class:`BadRequest` and
:class:`PanicRecovered` for the two ways to say something went wrong."""


@dataclass(frozen=True)
class WebhookServerOptions:
    host: str = ""
    """Address to listen on; ``""`` is every interface (controller-runtime's default)."""
    port: int = DEFAULT_PORT
    """0 picks a free port (read it from :attr:`WebhookServer.port`)."""
    cert_dir: Path = DEFAULT_CERT_DIR
    cert_name: str = DEFAULT_CERT_NAME
    key_name: str = DEFAULT_KEY_NAME
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    cert_poll_interval: float = DEFAULT_CERT_POLL_INTERVAL

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_request_bytes <= 0 or self.request_timeout <= 0:
            raise ValueError("max_request_bytes and request_timeout must be positive")
        if self.cert_poll_interval <= 0:
            raise ValueError("cert_poll_interval must be positive")


class BadRequest(Exception):
    """Raised by a handler for a body it cannot read as its review: the server answers
    400 with this message."""


class PanicRecovered(Exception):
    """Raised by a handler that failed unexpectedly but still has an answer to send.

    The server sends ``review`` (HTTP 200) and counts a panic: controller-runtime
    recovers a panicking admission handler into an ``allowed: false``, code 500 review,
    and a panicking conversion into a ``Failure`` result, each with its own counter.
    """

    def __init__(self, review: Mapping[str, Any], *, webhook: Literal["admission", "conversion"]):
        super().__init__(f"{webhook} webhook panicked")
        self.review = review
        self.webhook = webhook


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A failed ``metav1.Status`` as the API server spells one."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class _Refused(Exception):
    """An HTTP-level refusal; becomes an error response with a Status body."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class WebhookServer:
    """Serves the registered handlers over HTTPS until cancelled."""

    def __init__(self, options: WebhookServerOptions, *, registry: CollectorRegistry) -> None:
        self.options = options
        self.metrics = WebhookMetrics(registry)
        self._handlers: dict[str, Handler] = {}
        self._port: int | None = None

    # -- wiring -------------------------------------------------------------------------
    def register(self, path: str, handler: Handler) -> None:
        """Serve ``handler`` at ``path``; before or while running. ``ValueError`` when the
        path is taken (controller-runtime panics) or does not start with ``/``."""
        if not path.startswith("/"):
            raise ValueError(f"a webhook path starts with '/', got {path!r}")
        if path in self._handlers:
            raise ValueError(f"can't register duplicate path: {path}")
        self._handlers[path] = handler
        self.metrics.register_path(path)
        log.info("registering webhook", path=path)

    def handler(self, path: str) -> Handler | None:
        """The handler registered at ``path``, if any."""
        return self._handlers.get(path)

    @property
    def paths(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def port(self) -> int | None:
        """The port listened on while running, else None."""
        return self._port

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound port through ``task_status``, serve until cancelled.

        Raises :class:`~reconciler.webhook.certwatcher.CertificateError` when the pair
        does not load at start, ``ListenError`` when the port cannot be bound.
        """
        opts = self.options
        certs = CertWatcher(
            opts.cert_dir / opts.cert_name,
            opts.cert_dir / opts.key_name,
            poll_interval=opts.cert_poll_interval,
        )
        app = web.Application(client_max_size=opts.max_request_bytes)
        app.router.add_route("*", "/{path:.*}", self._serve)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site: web.BaseSite
            bind = f"{opts.host}:{opts.port}"
            try:
                if opts.host == "":
                    sock = listen_on_all_interfaces(opts.port)
                    site = web.SockSite(runner, sock, ssl_context=certs.server_context)
                else:
                    site = web.TCPSite(
                        runner, opts.host, opts.port, ssl_context=certs.server_context
                    )
                await site.start()
            except OSError as err:
                raise ListenError(bind, "webhooks", err) from err
            self._port = int(runner.addresses[0][1])
            log.info("serving webhooks", host=opts.host, port=self._port, paths=self.paths)
            async with anyio.create_task_group() as tg:
                tg.start_soon(certs.run, name="certificate watcher")
                task_status.started(self._port)
        finally:
            self._port = None
            with anyio.move_on_after(_SHUTDOWN_TIMEOUT + 1, shield=True):
                await runner.cleanup()

    async def started_check(self) -> None:
        """Readiness: raises unless a TLS handshake with the running server succeeds."""
        port = self._port
        if port is None:
            raise RuntimeError("webhook server has not been started yet")
        # As controller-runtime's StartedChecker: the handshake is the test, not the
        # certificate's names (it skips verification too).
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        host = self.options.host if self.options.host not in ("", "0.0.0.0", "::") else None
        try:
            stream = await anyio.connect_tcp(
                host or "localhost", port, ssl_context=ctx, tls_standard_compatible=False
            )
        except OSError as err:
            raise RuntimeError(f"webhook server is not reachable: {err}") from err
        await stream.aclose()

    # -- serving ------------------------------------------------------------------------
    async def _serve(self, request: web.Request) -> web.Response:
        path = request.path
        handler = self._handlers.get(path)
        if handler is None:
            return _error_response(404, f"no webhook is registered at {path}")
        m = self.metrics
        in_flight = m.requests_in_flight.labels(path)
        in_flight.inc()
        start = anyio.current_time()
        try:
            response = await self._answer(request, handler)
        finally:
            in_flight.dec()
            m.latency_seconds.labels(path).observe(anyio.current_time() - start)
        m.requests_total.labels(path, str(response.status)).inc()
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.Response:
        path = request.path
        review: object = None
        try:
            # A scope, not fail_after: a TimeoutError raised by the handler itself is a
            # handler failure, not this bound.
            with anyio.move_on_after(self.options.request_timeout) as bound:
                review = await handler(await self._read(request))
        except _Refused as err:
            log.warning("webhook request refused", path=path, code=err.code, error=str(err))
            return _error_response(err.code, str(err))
        except BadRequest as err:
            log.warning("webhook request refused", path=path, code=400, error=str(err))
            return _error_response(400, str(err))
        except PanicRecovered as err:
            m = self.metrics
            (m.panics_total if err.webhook == "admission" else m.conversion_panics_total).inc()
            log.error("webhook handler panicked; recovered", path=path, exc_info=err.__cause__)
            review = err.review
        except Exception as err:
            self.metrics.panics_total.inc()
            log.error("webhook handler failed", path=path, exc_info=err)
            return _error_response(500, f"internal error: {type(err).__name__}: {err}")
        if bound.cancelled_caught:
            log.error("webhook request timed out", path=path)
            message = f"request timed out after {self.options.request_timeout}s"
            return _error_response(503, message)
        try:
            body = orjson.dumps(dict(review))  # type: ignore[call-overload]
        except (TypeError, ValueError, orjson.JSONEncodeError) as err:
            self.metrics.panics_total.inc()
            log.error("webhook handler returned no JSON object", path=path, error=str(err))
            return _error_response(500, f"internal error: the handler's answer: {err}")
        return web.Response(body=body, content_type="application/json")

    async def _read(self, request: web.Request) -> Mapping[str, Any]:
        if request.method != "POST":
            raise _Refused(405, f"method {request.method} is not allowed; webhooks take POST")
        limit = self.options.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Refused(413, f"request entity is too large; limit is {limit} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(413, f"request entity is too large; limit is {limit} bytes") from None
        if not raw:
            raise _Refused(400, "request body is empty")
        if request.content_type != "application/json":
            raise _Refused(400, f"contentType={request.content_type}, expected application/json")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise _Refused(400, f"request body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise _Refused(400, f"request body is a JSON {type(body).__name__}, not an object")
        return body


def _error_response(code: int, message: str) -> web.Response:
    body = status_body(code, _REASONS.get(code, "Unknown"), message)
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")
