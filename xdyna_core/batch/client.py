"""A small ComfyUI HTTP + websocket client on the standard library.

Only what a batch run needs: upload, queue, follow `/ws` events, read history, download outputs,
interrupt. The websocket part speaks just enough of RFC 6455 for ComfyUI's JSON text frames
(binary preview frames are skipped).
"""
from __future__ import annotations

import base64
import json
import mimetypes
import os
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, Optional


class ComfyError(RuntimeError):
    """A request ComfyUI refused or a run that failed; `details` holds ComfyUI's own record."""

    def __init__(self, message: str, details: Optional[dict] = None):
        super().__init__(message)
        self.details = details or {}


def describe_node_errors(body: dict) -> str:
    """One readable line per failing node from a /prompt 400 answer."""
    lines = []
    err = body.get("error", {})
    if err:
        lines.append(f"{err.get('type', 'error')}: {err.get('message', '')}".strip())
    for node_id, rec in (body.get("node_errors") or {}).items():
        for e in rec.get("errors", []):
            lines.append(f"node {node_id} ({rec.get('class_type', '?')}): {e.get('message', '')} {e.get('details', '')}".strip())
    return "; ".join(lines) or json.dumps(body)[:500]


class ComfyClient:
    def __init__(self, url: str = "http://127.0.0.1:8188", timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    # -- HTTP ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                details = json.loads(payload)
            except ValueError:
                details = {"raw": payload.decode("utf-8", "replace")[:2000]}
            raise ComfyError(f"{method} {path} -> HTTP {e.code}: {describe_node_errors(details)}", details) from None
        except urllib.error.URLError as e:
            raise ComfyError(f"cannot reach ComfyUI at {self.url}: {e.reason}") from None

    def get_json(self, path: str):
        return json.loads(self._request("GET", path))

    def post_json(self, path: str, obj) -> dict:
        raw = self._request("POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"})
        return json.loads(raw) if raw.strip() else {}

    def upload(self, path: Path, overwrite: bool = True) -> str:
        """Upload a file into ComfyUI's input folder; returns the name to put in a loader widget."""
        path = Path(path)
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = [
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\n{str(overwrite).lower()}\r\n".encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        raw = self._request("POST", "/upload/image", b"".join(parts),
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        info = json.loads(raw)
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def queue(self, workflow: dict) -> str:
        answer = self.post_json("/prompt", {"prompt": workflow, "client_id": self.client_id})
        if "prompt_id" not in answer:
            raise ComfyError(f"ComfyUI did not queue the workflow: {describe_node_errors(answer)}", answer)
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def download(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        return self._request("GET", f"/view?{q}")

    def interrupt(self):
        self.post_json("/interrupt", {})

    # -- websocket ----------------------------------------------------------------------------
    def open_events(self, timeout: Optional[float] = None) -> Iterator[dict]:
        """Connect to `/ws` now (before queueing, so no event is missed) and return an iterator of
        ComfyUI's JSON messages for this client id; it ends when the socket closes.

        Every connection gets a fresh client id, which the following queue() uses: ComfyUI forgets
        a client id's socket when *any* socket with that id closes, so a reused id would lose the
        events of the newer socket once the older one is closed."""
        self.client_id = uuid.uuid4().hex
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme != "http":
            raise ComfyError("the batch client speaks plain http to ComfyUI; use it on a trusted network")
        host, port = parsed.hostname, parsed.port or 80
        try:
            sock = socket.create_connection((host, port), timeout=timeout or self.timeout)
        except OSError as e:
            raise ComfyError(f"cannot reach ComfyUI at {self.url}: {e}") from None
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws?clientId={self.client_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        reader = sock.makefile("rb")
        status = reader.readline()
        if b" 101 " not in status:
            sock.close()
            raise ComfyError(f"websocket upgrade refused by {self.url}: {status!r}")
        while reader.readline() not in (b"\r\n", b""):
            pass
        return self._messages(sock, reader)

    @staticmethod
    def _messages(sock, reader) -> Iterator[dict]:
        try:
            while True:
                frame = _read_frame(reader)
                if frame is None:
                    return
                opcode, payload = frame
                if opcode == 1:
                    yield json.loads(payload.decode("utf-8"))
                elif opcode == 8:
                    return
                elif opcode == 9:  # ping -> pong (masked, as a client must)
                    sock.sendall(_client_frame(10, payload))
        finally:
            sock.close()


def _read_exact(reader, n: int) -> Optional[bytes]:
    data = reader.read(n)
    return data if data is not None and len(data) == n else None


def _read_frame(reader):
    head = _read_exact(reader, 2)
    if head is None:
        return None
    opcode = head[0] & 0x0F
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", _read_exact(reader, 2))[0]
    elif length == 127:
        length = struct.unpack(">Q", _read_exact(reader, 8))[0]
    mask = _read_exact(reader, 4) if head[1] & 0x80 else None
    payload = _read_exact(reader, length) if length else b""
    if payload is None:
        return None
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def _client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
