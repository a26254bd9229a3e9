"""A loopback HTTP proxy in front of a real OpenAI-compatible server, for judge tests.

It forwards every request to the upstream server unchanged, except that it answers 429 or 500 for
a seeded share of requests (a flaky provider), answers 502 while the upstream is down, answers 200
with a body that is no chat completion once `malformed_after` answers went through (a gateway's
error page), and counts the successful answers per (user message), so a test can prove no pair was
scored twice.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Proxy:
    def __init__(self, upstream: str, failure_rate: float = 0.0, seed: int = 0, malformed_after: int | None = None):
        self.upstream = upstream.rstrip("/")
        self.failure_rate = failure_rate
        self.malformed_after = malformed_after
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.answered: Counter[str] = Counter()
        self.failures_injected = 0
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.requests += 1
                    roll = proxy.random.random()
                    malformed = proxy.malformed_after is not None and sum(proxy.answered.values()) >= proxy.malformed_after
                if malformed:
                    self._reply(200, b"<html><body>502 Bad Gateway</body></html>")
                    return
                if roll < proxy.failure_rate:
                    with proxy.lock:
                        proxy.failures_injected += 1
                    code = 429 if roll < proxy.failure_rate / 2 else 500
                    self._reply(code, b'{"error": "injected"}', {"Retry-After": "0"} if code == 429 else None)
                    return
                request = urllib.request.Request(proxy.upstream + self.path, data=body,
                                                 headers={"Content-Type": "application/json"}, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        answer = response.read()
                        status = response.status
                except urllib.error.HTTPError as exc:
                    self._reply(exc.code, exc.read())
                    return
                except OSError:
                    self._reply(502, b'{"error": "upstream down"}')
                    return
                if status == 200:
                    message = json.loads(body)["messages"][-1]["content"]
                    with proxy.lock:
                        proxy.answered[message] += 1
                self._reply(status, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
