"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for tests (chat completions only).

Each request to ``/v1/chat/completions`` takes the next item of the script; when the script is
used up, ``fallback`` answers. An item is a dict:
  content: str                reply text (HTTP 200)
  finish_reason: str          default "stop"; a request's ``stop`` strings end the content at the first one found
                              (left out, finish_reason "stop"), as OpenAI's servers do
  usage: (prompt, completion) token counts reported
  status: int                 an HTTP error instead of a reply (429, 500, ...)
  headers: dict               extra response headers (e.g. {"Retry-After": "1"})
  delay: float                seconds to wait before answering (to provoke client time-outs)

``models``: when given, a request for any other model is answered 404 (as OpenAI, vLLM and Ollama do) without
taking a script item, and GET /models lists them. ``api_key``: when given, a request without that bearer key is
answered 401 without taking a script item.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, script: list[dict], fallback: dict | None = None, models: list[str] | None = None,
                 api_key: str | None = None):
        self.script = list(script)
        self.models = models
        self.api_key = api_key
        self.fallback = fallback or {"content": "I have no further ideas.", "usage": (10, 5)}
        self.requests: list[dict] = []
        self.served: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    ids = server.models or ["fake"]
                    self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in ids]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                    return
                if server.models is not None and body.get("model") not in server.models:
                    self._json(404, {"error": {"message": f"The model '{body.get('model')}' does not exist",
                                               "type": "invalid_request_error", "code": "model_not_found"}})
                    return
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "time": time.monotonic()})
                    item = server.script.pop(0) if server.script else server.fallback
                    server.served.append(item)
                if item.get("delay"):
                    time.sleep(item["delay"])
                if item.get("status", 200) != 200:
                    self._json(item["status"], {"error": {"message": f"scripted {item['status']}", "type": "test"}},
                               item.get("headers", {}))
                    return
                p, c = item.get("usage", (0, 0))
                content, finish = item["content"], item.get("finish_reason", "stop")
                cuts = [content.find(x) for x in body.get("stop") or () if x in content]
                if cuts:  # as OpenAI's servers do: the reply ends before the first stop string, which it leaves out
                    content, finish = content[:min(cuts)], "stop"
                self._json(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                }, item.get("headers", {}))

            def _json(self, status, obj, headers=None):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (time-out test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
