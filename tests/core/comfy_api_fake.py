"""In-process fake ComfyUI servers speaking ComfyUI's HTTP + websocket protocol (aiohttp.web).

Each server runs one prompt at a time from its queue, like ComfyUI: it sends execution_start,
executing, progress, executed, execution_success and executing(None) to the queueing client's
socket, then keeps a /history record and serves the output through /view. All servers share one
event loop in a background thread, so tests (and a client in a subprocess) talk to them over
real loopback sockets. ``kill()`` drops a server as a crash would: open sockets are cut and new
connections refused; ``revive()`` starts it again on the same port. ``unavailable = True`` makes
it answer every request with HTTP 503 (a proxy in front of a server that is down); ``freeze()``
makes it silent as a hung machine is: open sockets are no longer read (websocket pings go
unanswered) and new requests get no answer, until it is killed or closed.
Like ComfyUI with latent previews on, each progress value is sent twice (the second time with the
preview).
"""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Dict, List, Optional, Set

from aiohttp import web

_loop: Optional[asyncio.AbstractEventLoop] = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, daemon=True, name="fake-comfy").start()
    return _loop


def _call(coro, timeout=10.0):
    return asyncio.run_coroutine_threadsafe(coro, loop()).result(timeout)


def job_of(workflow: dict) -> str:
    """The job name from the output prefix the batch runner sets (`xdyna/<job>`)."""
    for node in workflow.values():
        prefix = node.get("inputs", {}).get("filename_prefix")
        if isinstance(prefix, str):
            return prefix.split("/")[-1]
    return "?"


class FakeComfyServer:
    def __init__(self, name: str = "fake", seconds: float = 0.05, fail_on: Optional[Set[str]] = None,
                 reply: Optional[bytes] = None, error_type: Optional[str] = None, reply_status: int = 200,
                 unavailable: bool = False):
        self.name, self.seconds = name, seconds
        self.error_type = error_type            # every prompt ends with an execution_error of this type
        self.fail_on = set(fail_on or ())       # reference upload names whose prompt fails validation
        self.reply = reply                      # raw body for every /prompt answer (a broken server)
        self.reply_status = reply_status        # ... with this HTTP status
        self.unavailable = unavailable          # every request answered 503
        self.uploads: List[str] = []
        self.input_dir: Dict[str, bytes] = {}   # ComfyUI's input folder: name -> content
        self.read_at_start: Dict[str, Dict[str, bytes]] = {}   # job -> {input name: content when it ran}
        self.queued: List[str] = []             # job names, in queue order
        self.executed: List[str] = []           # job names whose execution completed
        self.started = threading.Event()        # set when any prompt starts executing
        self.interrupts = 0
        self.history: Dict[str, dict] = {}
        self.sockets: Dict[str, web.WebSocketResponse] = {}
        self.dead = False
        self._count = 0
        self._interrupt = False
        self.url = _call(self._start())

    async def _start(self, port: int = 0) -> str:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_post("/interrupt", self._do_interrupt)
        app.router.add_get("/history/{pid}", self._history)
        app.router.add_get("/view", self._view)
        app.router.add_get("/system_stats", self._stats)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", port)
        await self.site.start()
        self.dead = False
        self.frozen = asyncio.Event()
        self.frozen.set()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = asyncio.ensure_future(self._execute_loop())
        port = self.site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    # -- control from the test thread ------------------------------------------------------------
    def kill(self):
        _call(self._kill())

    async def _kill(self):
        self.dead = True
        self.frozen.set()
        self.worker.cancel()
        for ws in list(self.sockets.values()):
            tr = ws._req.transport if ws._req is not None else None
            if tr is not None:
                tr.abort()  # cut, as a crash does: no close frame
        await self.site.stop()
        await self.runner.cleanup()

    def freeze(self):
        _call(self._freeze())

    async def _freeze(self):
        self.frozen.clear()
        for ws in list(self.sockets.values()):
            if ws._req is not None and ws._req.transport is not None:
                ws._req.transport.pause_reading()

    def revive(self):
        """Start again on the same port after kill() (a restarted ComfyUI)."""
        _call(self._start(int(self.url.rsplit(":", 1)[1])))

    def close(self):
        if not self.dead:
            self.kill()

    @web.middleware
    async def _gate(self, request, handler):
        await self.frozen.wait()   # set unless frozen
        if self.unavailable:
            return web.Response(status=503, text="<html><body>503 Service Unavailable</body></html>",
                                content_type="text/html")
        return await handler(request)

    # -- protocol ---------------------------------------------------------------------------------
    async def _stats(self, request):
        return web.json_response({"system": {"comfyui_version": "fake"}, "devices": []})

    async def _ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client_id = request.query.get("clientId", "")
        self.sockets[client_id] = ws
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}})
        await ws.send_bytes(b"\x00\x00\x00\x01preview")  # binary frames must be skipped
        try:
            async for _ in ws:
                pass
        finally:
            if self.sockets.get(client_id) is ws:
                del self.sockets[client_id]
        return ws

    async def _upload(self, request):
        """ComfyUI's rule (server.py image_upload): overwrite=true replaces the file; otherwise the
        same content keeps its name and other content gets "name (i).ext"."""
        form = await request.post()
        field = form["image"]
        data = field.file.read()
        self.uploads.append(field.filename)
        name = field.filename
        if form.get("overwrite") not in ("true", "1"):
            stem, dot, ext = name.rpartition(".")
            i = 1
            while name in self.input_dir and self.input_dir[name] != data:
                name = f"{stem} ({i}){dot}{ext}"
                i += 1
        self.input_dir[name] = data
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    async def _do_interrupt(self, request):
        self.interrupts += 1
        self._interrupt = True
        return web.json_response({})

    async def _prompt(self, request):
        if self.reply is not None:
            return web.Response(body=self.reply, status=self.reply_status, content_type="text/html")
        req = await request.json()
        wf = req["prompt"]
        ref = next((n["inputs"]["image"] for n in wf.values() if n["class_type"] == "LoadImage"), "")
        if ref in self.fail_on:
            return web.json_response(
                {"error": {"type": "prompt_outputs_failed_validation", "message": "bad"},
                 "node_errors": {"3": {"class_type": "XDynaSampler",
                                       "errors": [{"message": "frame counts disagree", "details": "pose 3 vs face 2"}]}}},
                status=400)
        pid = f"{self.name}-p{self._count}"
        self._count += 1
        job = job_of(wf)
        self.queued.append(job)
        names = [v for n in wf.values() for v in n.get("inputs", {}).values()
                 if isinstance(v, str) and v in self.input_dir]
        await self.queue.put((pid, job, req.get("client_id"), names))
        return web.json_response({"prompt_id": pid, "number": self._count, "node_errors": {}})

    async def _send(self, client_id, obj):
        ws = self.sockets.get(client_id)
        if ws is not None and not ws.closed:
            try:
                await ws.send_str(json.dumps(obj))
            except ConnectionError:
                pass

    async def _execute_loop(self):
        while True:
            pid, job, cid, names = await self.queue.get()
            self.read_at_start[job] = {n: self.input_dir[n] for n in names}   # what its loaders would read
            self._interrupt = False
            self.started.set()
            await self._send(cid, {"type": "execution_start", "data": {"prompt_id": pid}})
            await self._send(cid, {"type": "executing", "data": {"node": "3", "prompt_id": pid}})
            steps = 4
            interrupted = False
            for i in range(steps):
                end = loop().time() + self.seconds / steps
                while not self._interrupt and loop().time() < end:  # an interrupt lands within 50 ms
                    await asyncio.sleep(min(0.05, max(0.0, end - loop().time())))
                if self._interrupt:
                    interrupted = True
                    break
                for _ in range(2):  # the value, then the same value with its preview
                    await self._send(cid, {"type": "progress",
                                           "data": {"value": i + 1, "max": steps, "prompt_id": pid, "node": "3"}})
            if self.error_type:
                info = {"prompt_id": pid, "node_id": "3", "node_type": "XDynaSampler",
                        "exception_type": self.error_type, "exception_message": "failed on purpose"}
                self.history[pid] = {"status": {"status_str": "error", "completed": False,
                                                "messages": [["execution_error", info]]}, "outputs": {}}
                await self._send(cid, {"type": "execution_error", "data": info})
                continue
            if interrupted:
                info = {"prompt_id": pid, "node_id": "3", "node_type": "XDynaSampler"}
                self.history[pid] = {"status": {"status_str": "error", "completed": False,
                                                "messages": [["execution_interrupted", info]]}, "outputs": {}}
                await self._send(cid, {"type": "execution_interrupted", "data": info})
                continue
            out = {"filename": f"{job}_00001.mp4", "subfolder": "xdyna", "type": "output"}
            self.history[pid] = {"status": {"status_str": "success", "completed": True, "messages": []},
                                 "outputs": {"5": {"images": [out]}}}
            self.executed.append(job)
            await self._send(cid, {"type": "executed", "data": {"node": "5", "output": {"images": [out]}, "prompt_id": pid}})
            await self._send(cid, {"type": "execution_success", "data": {"prompt_id": pid}})
            await self._send(cid, {"type": "executing", "data": {"node": None, "prompt_id": pid}})

    async def _history(self, request):
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def _view(self, request):
        body = f"video-bytes:{self.name}:{request.query.get('filename')}".encode()
        return web.Response(body=body, content_type="video/mp4")
