"""A small OpenAI-compatible judge endpoint on loopback, for tests of what the http judge does with
the replies it gets.

It answers every request to /chat/completions with one token and its logprobs, P(yes) a fixed
function of the user message (`expected_score`), and records each request's method, path and
headers. It can instead redirect every request to another address (`redirect_to`, with `code`),
or answer 200 with `malformed_body` once `malformed_after` good answers went out.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def expected_score(message: str) -> float:
    """P(yes) this endpoint gives a user message: in (0, 1), different for different messages."""
    digest = int.from_bytes(hashlib.blake2b(message.encode(), digest_size=4).digest(), "big")
    return (digest % 1000 + 1) / 1002


def completion(p_yes: float) -> bytes:
    yes, no = math.log(p_yes), math.log(1 - p_yes)
    top = [{"token": "Yes", "logprob": yes}, {"token": "No", "logprob": no}]
    choice = {"index": 0, "message": {"role": "assistant", "content": "Yes" if yes >= no else "No"},
              "logprobs": {"content": [{**max(top, key=lambda t: t["logprob"]), "top_logprobs": top}]}}
    return json.dumps({"object": "chat.completion", "choices": [choice]}).encode()


class JudgeEndpoint:
    def __init__(self, *, redirect_to: str | None = None, code: int = 302, malformed_after: int | None = None,
                 malformed_body: bytes = b"<html><body>502 Bad Gateway</body></html>"):
        self.redirect_to, self.code = redirect_to, code
        self.malformed_after, self.malformed_body = malformed_after, malformed_body
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers with lower-case names)
        self.answered: Counter[str] = Counter()  # user message -> good answers given
        self.malformed = 0
        endpoint = self

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

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                with endpoint.lock:
                    endpoint.requests.append((self.command, self.path, headers))
                if endpoint.redirect_to is not None:
                    self._reply(endpoint.code, b"", {"Location": endpoint.redirect_to})
                    return
                # a redirected POST arrives as a GET without a body: it still gets a valid answer
                message = json.loads(body)["messages"][-1]["content"] if body else ""
                with endpoint.lock:
                    malformed = endpoint.malformed_after is not None and \
                        sum(endpoint.answered.values()) >= endpoint.malformed_after
                    if malformed:
                        endpoint.malformed += 1
                    else:
                        endpoint.answered[message] += 1
                self._reply(200, endpoint.malformed_body if malformed else completion(expected_score(message)))

            do_GET = do_POST = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> JudgeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
