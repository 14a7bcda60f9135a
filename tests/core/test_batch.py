"""Batch job lists and the ComfyUI API client, against a fake ComfyUI on loopback."""
import json
import socketserver
import struct
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from xdyna_core.batch import JobListError, fill_workflow, load_jobs, run_batch
from xdyna_core.batch.client import ComfyClient, ComfyError

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}, "_meta": {"title": "reference"}},
    "2": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}},
    "3": {"class_type": "XDynaSampler", "inputs": {"steps": 25, "cfg": 7.5, "seed": 0, "model": ["4", 0]}},
    "5": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "ComfyUI", "video": ["6", 0]}},
}


@pytest.fixture
def files(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"png")
    (tmp_path / "d.mp4").write_bytes(b"mp4")
    return tmp_path


def write_jobs(tmp_path, obj):
    p = tmp_path / "jobs.json"
    p.write_text(json.dumps(obj))
    return p


def test_job_list_defaults_names_and_paths(files):
    jobs = load_jobs(write_jobs(files, {"defaults": {"steps": 10},
                                        "jobs": [{"reference": "a.png", "driving": "d.mp4", "seed": 3},
                                                 {"name": "second", "reference": "b.png", "driving": "d.mp4", "steps": 4}]}))
    assert [j.name for j in jobs] == ["001_a_d", "second"]
    assert jobs[0].options == {"steps": 10, "seed": 3} and jobs[1].options == {"steps": 4}
    assert jobs[0].reference == (files / "a.png").resolve()


@pytest.mark.parametrize("obj,message", [
    ([{"reference": "a.png"}], "missing driving"),
    ([{"reference": "nope.png", "driving": "d.mp4"}], "reference file not found"),
    ([{"name": "x", "reference": "a.png", "driving": "d.mp4"}, {"name": "x", "reference": "b.png", "driving": "d.mp4"}], "unique"),
    ([{"name": "../evil", "reference": "a.png", "driving": "d.mp4"}], "must be letters"),
    ([], "non-empty"),
])
def test_job_list_errors(files, obj, message):
    with pytest.raises(JobListError, match=message):
        load_jobs(write_jobs(files, obj))


def test_fill_workflow(files):
    job = load_jobs(write_jobs(files, [{"name": "j", "reference": "a.png", "driving": "d.mp4", "steps": 5, "seed": 9}]))[0]
    wf = fill_workflow({"prompt": WORKFLOW}, job, "up/a.png", "d.mp4")
    assert wf["1"]["inputs"]["image"] == "up/a.png" and wf["2"]["inputs"]["file"] == "d.mp4"
    assert wf["3"]["inputs"]["steps"] == 5 and wf["3"]["inputs"]["seed"] == 9
    assert wf["3"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert wf["5"]["inputs"]["filename_prefix"] == "xdyna/j"
    assert WORKFLOW["3"]["inputs"]["steps"] == 25  # the template is not modified
    bad = load_jobs(write_jobs(files, [{"reference": "a.png", "driving": "d.mp4", "stepz": 5}]))[0]
    with pytest.raises(JobListError, match="stepz"):
        fill_workflow(WORKFLOW, bad, "a", "b")
    with pytest.raises(JobListError, match="API format"):
        fill_workflow({"nodes": [], "links": []}, job, "a", "b")


# --- a fake ComfyUI speaking the real HTTP + websocket protocol on loopback ---------------------

class FakeComfy:
    def __init__(self, fail_on=None):
        self.fail_on = fail_on or set()
        self.uploads, self.prompts, self.history, self.interrupts = [], [], {}, 0
        self.ws_clients = {}


def _ws_frame(obj) -> bytes:
    payload = json.dumps(obj).encode()
    n = len(payload)
    head = bytes([0x81]) + (bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n))
    return head + payload


def make_handler(fake: FakeComfy):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _json(self, obj, code=200):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/ws"):
                client_id = self.path.split("clientId=")[1]
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                fake.ws_clients[client_id] = self
                self.close_connection = True
                done = threading.Event()
                self.ws_done = done
                done.wait(10)
                return
            if self.path.startswith("/history/"):
                pid = self.path.split("/")[-1]
                return self._json({pid: fake.history[pid]} if pid in fake.history else {})
            if self.path.startswith("/view"):
                body = b"video-bytes:" + self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self._json({}, 404)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/upload/image":
                name = body.split(b'filename="')[1].split(b'"')[0].decode()
                fake.uploads.append(name)
                return self._json({"name": name, "subfolder": "", "type": "input"})
            if self.path == "/interrupt":
                fake.interrupts += 1
                return self._json({})
            if self.path == "/prompt":
                req = json.loads(body)
                wf = req["prompt"]
                ref = wf["1"]["inputs"]["image"]
                if ref in fake.fail_on:
                    return self._json({"error": {"type": "prompt_outputs_failed_validation", "message": "bad"},
                                       "node_errors": {"3": {"class_type": "XDynaSampler",
                                                             "errors": [{"message": "frame counts disagree", "details": "pose 3 vs face 2"}]}}}, 400)
                pid = f"p{len(fake.prompts)}"
                fake.prompts.append(wf)
                ws = fake.ws_clients.pop(req["client_id"])
                prefix = wf["5"]["inputs"]["filename_prefix"]
                ws.wfile.write(_ws_frame({"type": "progress", "data": {"value": 1, "max": 2, "prompt_id": pid, "node": "3"}}))
                ws.wfile.write(_ws_frame({"type": "executing", "data": {"node": None, "prompt_id": pid}}))
                ws.wfile.flush()
                fake.history[pid] = {"status": {"status_str": "success", "completed": True},
                                     "outputs": {"5": {"images": [{"filename": prefix.split("/")[-1] + ".mp4",
                                                                   "subfolder": "xdyna", "type": "output"}]}}}
                ws.ws_done.set()
                return self._json({"prompt_id": pid, "number": 0, "node_errors": {}})
            self._json({}, 404)
    return Handler


@pytest.fixture
def server():
    def start(fake):
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), make_handler(fake))
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"
    servers = []
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_batch_runs_reports_failures_and_resumes(files, server, tmp_path):
    jobs = load_jobs(write_jobs(files, [{"name": n, "reference": r, "driving": "d.mp4"}
                                        for n, r in (("one", "a.png"), ("two", "b.png"), ("three", "c.png"))]))
    fake = FakeComfy(fail_on={"b.png"})
    url = server(fake)
    out = tmp_path / "out"
    logs = []
    result = run_batch(jobs, WORKFLOW, ComfyClient(url, timeout=10), out, log=logs.append)
    assert result.done == ["one", "three"]
    assert "frame counts disagree" in result.failed["two"] and "XDynaSampler" in result.failed["two"]
    assert (out / "one" / "one.mp4").read_bytes().startswith(b"video-bytes:")
    assert any("1/2" in line for line in logs)
    state = json.loads((out / "batch_state.json").read_text())
    assert state["jobs"]["two"]["status"] == "failed"

    # Resume: the finished jobs are skipped, the failed one is retried (and now succeeds).
    fake.fail_on.clear()
    queued_before = len(fake.prompts)
    result = run_batch(jobs, WORKFLOW, ComfyClient(url, timeout=10), out, log=logs.append)
    assert result.skipped == ["one", "three"] and result.done == ["two"]
    assert len(fake.prompts) == queued_before + 1


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(ComfyError, match="cannot reach ComfyUI"):
        ComfyClient("http://127.0.0.1:9", timeout=2).queue({})
