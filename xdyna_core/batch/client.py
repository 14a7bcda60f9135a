"""ComfyUI's HTTP + websocket API on aiohttp (the HTTP library ComfyUI itself ships).

Only what a batch run needs: upload, queue, follow `/ws` events, read history, download outputs,
interrupt, and a liveness probe. :class:`ComfyServer` is the asyncio client the batch runner uses
(one per server, many jobs at once); :class:`ComfyClient` is the same API for plain synchronous
scripts (it runs its own event loop in a background thread).

Every error says which server answered what, so a farm of servers stays debuggable. A
:class:`ComfyError` with ``server_side=True`` means the server, not the job, failed (connection
refused or lost, HTTP 5xx, an answer that is not JSON, no answer in time, out of memory): the runner
may retry that job on another server. ``reason`` is the short class of the failure ("refused",
"timed out", "HTTP 500", "not JSON", ...) that the batch summary groups jobs by.

Time bounds (limits.py): a connection must open within ``connect_timeout`` (CONNECT_TIMEOUT) and
every answer (and each further piece of it) must come within ``timeout`` (ANSWER_TIMEOUT) of the
request being sent; an upload may take ``timeout`` plus UPLOAD_SECONDS_PER_MB per MB in all. The websocket is pinged
every 2 x ``timeout`` and closed as lost when no pong comes within ``timeout``, so a silent server
is noticed whatever the job's length.
"""
from __future__ import annotations

import asyncio
import json
import mimetypes
import threading
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator, Optional

import aiohttp

from ..errors import XDynaError
from .limits import ANSWER_TIMEOUT, CONNECT_TIMEOUT, UPLOAD_SECONDS_PER_MB

#: exception types of an execution_error that are the server's trouble, not the job's
SERVER_SIDE_EXCEPTIONS = ("OutOfMemoryError", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError",
                          "MemoryError", "RuntimeError: CUDA error", "ConnectionError")


class ComfyError(XDynaError, RuntimeError):
    """A request ComfyUI refused or a run that failed; `details` holds ComfyUI's own record."""

    def __init__(self, message: str, details: Optional[dict] = None, server_side: bool = False,
                 reason: str = "error"):
        super().__init__(message)
        self.details = details or {}
        self.server_side = server_side
        self.reason = reason


def describe_node_errors(body: dict) -> str:
    """One readable line per failing node from a /prompt 400 answer."""
    lines = []
    err = body.get("error", {}) if isinstance(body, dict) else {}
    if isinstance(err, dict) and err:
        lines.append(f"{err.get('type', 'error')}: {err.get('message', '')}".strip())
    elif err:
        lines.append(str(err))
    for node_id, rec in ((body.get("node_errors") if isinstance(body, dict) else None) or {}).items():
        for e in rec.get("errors", []):
            lines.append(f"node {node_id} ({rec.get('class_type', '?')}): {e.get('message', '')} {e.get('details', '')}".strip())
    return "; ".join(lines) or json.dumps(body)[:500]


def execution_error(data: dict) -> ComfyError:
    """ComfyError from an `execution_error` event (or history message) of ComfyUI."""
    kind = str(data.get("exception_type", ""))
    msg = (f"node {data.get('node_id')} ({data.get('node_type')}): "
           f"{kind + ': ' if kind else ''}{str(data.get('exception_message', 'failed')).strip()}")
    server_side = any(kind.endswith(t) or kind == t for t in SERVER_SIDE_EXCEPTIONS)
    reason = ("out of memory" if "OutOfMemory" in kind or kind == "MemoryError"
              else "server error" if server_side else "node error")
    return ComfyError(msg, data, server_side=server_side, reason=reason)


def _parse_json(raw: bytes, url: str, what: str):
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        snippet = raw[:120].decode("utf-8", "replace").replace("\n", " ")
        raise ComfyError(f"{url}: {what} answered with something that is not JSON ({snippet!r}); "
                         f"is this address a ComfyUI server?", server_side=True, reason="not JSON") from None


def network_error(e: BaseException, url: str, what: str, connect_timeout: float, timeout: float) -> ComfyError:
    """The ComfyError of a request that got no answer: refused, timed out (which limit), lost."""
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return ComfyError(f"{url}: {what}: no connection within {connect_timeout:g} s", server_side=True,
                          reason="timed out")
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):   # sock_read, the upload bound, a ws pong
        return ComfyError(f"{url}: {what}: no answer within {timeout:g} s", server_side=True, reason="timed out")
    if isinstance(e, aiohttp.ClientConnectorError):
        refused = isinstance(e.os_error, ConnectionRefusedError)
        return ComfyError(f"cannot reach ComfyUI at {url} ({what}): "
                          + ("connection refused (is ComfyUI running there?)" if refused
                             else str(e.os_error or e) or type(e).__name__),
                          server_side=True, reason="refused" if refused else "unreachable")
    return ComfyError(f"{url}: {what}: connection lost ({e or type(e).__name__})", server_side=True,
                      reason="connection lost")


class ComfyServer:
    """Async client of one ComfyUI server; share one aiohttp session between servers."""

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float = ANSWER_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ComfyError(f"server address {url!r} must start with http:// or https://")
        self.session = session
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.last_answer = 0.0   # time.monotonic() of its last successful answer

    def _limits(self, total: Optional[float] = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=self.connect_timeout, sock_read=self.timeout)

    # -- HTTP ---------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, total: Optional[float] = None, **kwargs) -> bytes:
        what = f"{method} {path.split('?')[0]}"
        try:
            async with self.session.request(method, self.url + path, timeout=self._limits(total), **kwargs) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    try:
                        details = json.loads(payload)
                        text = describe_node_errors(details)
                    except ValueError:   # an HTML error page (a proxy, a crashed handler): its start
                        details = {"raw": payload.decode("utf-8", "replace")[:2000]}
                        text = " ".join(details["raw"].split())[:200]
                    raise ComfyError(f"{self.url}: {what} -> HTTP {resp.status}: {text}",
                                     details, server_side=resp.status >= 500, reason=f"HTTP {resp.status}")
                self.last_answer = time.monotonic()
                return payload
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
            raise network_error(e, self.url, what, self.connect_timeout, self.timeout) from None

    async def get_json(self, path: str):
        return _parse_json(await self._request("GET", path), self.url, f"GET {path}")

    async def post_json(self, path: str, obj) -> dict:
        return _parse_json(await self._request("POST", path, json=obj), self.url, f"POST {path}")

    async def probe(self) -> Optional[ComfyError]:
        """None when the server answers its system status as ComfyUI does, else why not."""
        try:
            stats = await self.get_json("/system_stats")
        except ComfyError as e:
            return e
        if not isinstance(stats, dict) or "system" not in stats:
            return ComfyError(f"{self.url}: GET /system_stats answered without a 'system' record; "
                              f"is this address a ComfyUI server?", server_side=True, reason="not ComfyUI")
        return None

    async def upload(self, path: Path) -> str:
        """Upload a file into ComfyUI's input folder; returns the name to put in a loader widget.

        Never with ``overwrite``: ComfyUI then keeps a file of the same name and content as it is
        and stores different content under a new name ("x (1).mp4"). Overwriting would rewrite
        (truncate, then write) an input that a queued or running prompt still reads, or the very
        file being uploaded when jobs name files in that server's own input folder."""
        path = Path(path)
        form = aiohttp.FormData()
        form.add_field("image", path.read_bytes(), filename=path.name,
                       content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        form.add_field("overwrite", "false")
        total = self.timeout + UPLOAD_SECONDS_PER_MB * path.stat().st_size / 2 ** 20
        try:
            info = _parse_json(await self._request("POST", "/upload/image", total=total, data=form), self.url,
                               f"uploading {path}")
            name = info["name"]
        except ComfyError as e:
            raise ComfyError(f"uploading {path}: {e}", e.details, e.server_side, e.reason) from None
        except (KeyError, TypeError):
            raise ComfyError(f"{self.url}: uploading {path}: the answer has no file name: {info!r:.200}",
                             server_side=True, reason="not ComfyUI") from None
        return f"{info['subfolder']}/{name}" if info.get("subfolder") else name

    async def queue(self, workflow: dict, client_id: str) -> str:
        answer = await self.post_json("/prompt", {"prompt": workflow, "client_id": client_id})
        if not isinstance(answer, dict) or "prompt_id" not in answer:
            raise ComfyError(f"{self.url} did not queue the workflow: {describe_node_errors(answer)}", answer)
        return answer["prompt_id"]

    async def history(self, prompt_id: str) -> dict:
        record = await self.get_json(f"/history/{prompt_id}")
        return record.get(prompt_id, {}) if isinstance(record, dict) else {}

    async def download(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        return await self._request("GET", "/view", params={"filename": filename, "subfolder": subfolder, "type": kind})

    async def interrupt(self):
        await self.post_json("/interrupt", {})

    # -- websocket ----------------------------------------------------------------------------
    async def open_events(self) -> "EventStream":
        """Connect to `/ws` with a fresh client id (before queueing, so no event is missed).

        A fresh id per connection: ComfyUI forgets a client id's socket when *any* socket with
        that id closes, so a reused id would lose the events of the newer socket."""
        client_id = uuid.uuid4().hex
        try:
            # the handshake has the request limits; then pings every 2 x timeout, a pong due within timeout
            ws = await self.session.ws_connect(f"{self.url}/ws", params={"clientId": client_id}, max_msg_size=0,
                                               heartbeat=2 * self.timeout)
        except aiohttp.WSServerHandshakeError as e:
            raise ComfyError(f"{self.url}: GET /ws -> HTTP {e.status}: the websocket was refused",
                             server_side=True, reason=f"HTTP {e.status}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
            raise network_error(e, self.url, "GET /ws", self.connect_timeout, self.timeout) from None
        return EventStream(ws, client_id, self.url, self.timeout)


class EventStream:
    """ComfyUI's JSON websocket messages (binary preview frames are skipped); iteration ends
    when the server closes the socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, client_id: str, url: str, timeout: float = ANSWER_TIMEOUT):
        self.ws, self.client_id, self.url, self.timeout = ws, client_id, url, timeout

    async def next(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The next JSON message, None when the server closed the socket; asyncio.TimeoutError after
        ``timeout`` seconds of silence; ComfyError when the connection broke or stopped answering pings."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                return _parse_json(msg.data.encode(), self.url, "the websocket")
            if msg.type == aiohttp.WSMsgType.ERROR or (msg.type == aiohttp.WSMsgType.CLOSED and self.ws.exception()):
                exc = msg.data if isinstance(msg.data, BaseException) else self.ws.exception()
                raise network_error(exc or ConnectionError("closed"), self.url, "the websocket",
                                    0.0, self.timeout) from None
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return None

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._iterate()

    async def _iterate(self):
        while True:
            ev = await self.next()
            if ev is None:
                return
            yield ev

    async def close(self):
        await self.ws.close()


class ComfyClient:
    """Synchronous facade of :class:`ComfyServer` for scripts and tests (one background loop)."""

    def __init__(self, url: str = "http://127.0.0.1:8188", timeout: float = ANSWER_TIMEOUT):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[ComfyServer] = None

    def _call(self, make_coro, timeout: Optional[float] = None):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True, name=f"comfy-client {self.url}").start()

            async def start():
                return ComfyServer(self.url, aiohttp.ClientSession(), self.timeout)
            self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        fut = asyncio.run_coroutine_threadsafe(make_coro(self._server), self._loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def upload(self, path: Path) -> str:
        return self._call(lambda s: s.upload(path))

    def queue(self, workflow: dict) -> str:
        return self._call(lambda s: s.queue(workflow, self.client_id))

    def history(self, prompt_id: str) -> dict:
        return self._call(lambda s: s.history(prompt_id))

    def get_json(self, path: str):
        return self._call(lambda s: s.get_json(path))

    def download(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        return self._call(lambda s: s.download(filename, subfolder, kind))

    def interrupt(self):
        self._call(lambda s: s.interrupt())

    def open_events(self, timeout: Optional[float] = None) -> "SyncEvents":
        """Open `/ws`; the following queue() uses this connection's client id. Iterating the
        result raises TimeoutError after ``timeout`` seconds without a message (default: no limit;
        a server that stops answering pings ends the iteration with a ComfyError)."""
        stream = self._call(lambda s: s.open_events())
        self.client_id = stream.client_id
        return SyncEvents(self, stream, timeout)

    def close(self):
        if self._loop is not None:
            self._call(lambda s: s.session.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SyncEvents:
    def __init__(self, client: ComfyClient, stream: EventStream, timeout: Optional[float]):
        self.client, self.stream, self.timeout = client, stream, timeout

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        try:
            ev = self.client._call(lambda s: self.stream.next(self.timeout))
        except asyncio.TimeoutError:
            raise TimeoutError(f"no websocket message from {self.stream.url} for {self.timeout:g} s") from None
        if ev is None:
            raise StopIteration
        return ev

    def close(self):
        self.client._call(lambda s: self.stream.close())
