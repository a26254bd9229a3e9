"""LLM judge: score = P(yes) / (P(yes) + P(no)) for "does this document answer this query?".

Two backends share one prompt template:
- `LocalJudge`: a causal LM through transformers; the probability is read from the next-token
  logits after the chat template's assistant prefix, in padded batches.
- `HttpJudge`: any OpenAI-compatible `/chat/completions` endpoint (vLLM, llama.cpp server, Ollama,
  OpenAI) asked for one token with `logprobs`; bounded concurrency, timeouts, and retries with
  backoff on 429, 5xx and dropped connections. The API key is read from an environment variable
  at request time and is never part of an identity, a log line or a manifest. Redirects are
  refused, never followed: following one would send the key to wherever the Location points.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed

import numpy as np

from hnmine.errors import HnmineError
from hnmine.prompts import QUERY_LIKELIHOOD_PROMPT

QUERY_TOKENS = 64


def render(template: str, query: str, document: str, instruction: str) -> str:
    try:
        return template.format(query=query, document=document, instruction=instruction)
    except (KeyError, IndexError) as exc:
        raise HnmineError(f"judge prompt template has an unknown field {exc}",
                          fix="use only {query}, {document} and {instruction}; double other braces") from None


def yes_probability(logprob_yes: float | None, logprob_no: float | None) -> float:
    """P(yes) / (P(yes) + P(no)); a side missing from the top tokens counts as probability 0."""
    if logprob_yes is None and logprob_no is None:
        return float("nan")
    if logprob_no is None:
        return 1.0
    if logprob_yes is None:
        return 0.0
    return 1.0 / (1.0 + math.exp(logprob_no - logprob_yes))


class LocalJudge:
    def __init__(self, model: str, *, system: str, template: str, instruction: str, batch_size: int = 8,
                 max_length: int = 1024, device: str | None = None, mode: str = "yes-no"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from hnmine.device import default_device
        from hnmine.packaged.resolve import resolve_model

        path = resolve_model(model)
        self.device = device or default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path).to(self.device).eval()
        self.torch = torch
        self.system, self.template, self.instruction = system, template, instruction
        self.batch_size, self.max_length, self.mode = batch_size, max_length, mode
        self.yes_ids = self._token_ids(["yes", " yes", "Yes", " Yes"])
        self.no_ids = self._token_ids(["no", " no", "No", " No"])
        if not self.yes_ids or not self.no_ids:
            raise HnmineError(f"the judge model's tokenizer has no single 'yes'/'no' token: {model}")

    def _token_ids(self, words: list[str]) -> list[int]:
        ids = set()
        for word in words:
            encoded = self.tokenizer.encode(word, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(encoded[0])
        return sorted(ids)

    def _prompt(self, query: str, document: str) -> str:
        # Cut the document, never the prompt's end: the answer is read after the assistant prefix.
        ids = self.tokenizer.encode(document, add_special_tokens=False)
        budget = max(16, self.max_length - len(self.tokenizer.encode(query, add_special_tokens=False)) - 96)
        if len(ids) > budget:
            document = self.tokenizer.decode(ids[:budget])
        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": render(self.template, query, document, self.instruction)}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _query_likelihood(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """exp(mean log P(query token | document prompt, earlier query tokens)): a per-token
        geometric-mean probability in (0, 1), higher when the document makes the query likely."""
        torch, tokenizer = self.torch, self.tokenizer
        sequences, spans = [], []
        for query, document in pairs:
            query_ids = tokenizer.encode(query, add_special_tokens=False)[:QUERY_TOKENS] or [tokenizer.eos_token_id]
            ids = tokenizer.encode(document, add_special_tokens=False)
            budget = max(16, self.max_length - len(query_ids) - 64)
            if len(ids) > budget:
                document = tokenizer.decode(ids[:budget])
            messages = [{"role": "user", "content": QUERY_LIKELIHOOD_PROMPT.format(document=document)}]
            prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            sequences.append(tokenizer.encode(prefix, add_special_tokens=False) + query_ids)
            spans.append(len(query_ids))
        width = max(map(len, sequences))
        input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, ids in enumerate(sequences):  # left padding: every query ends at the last position
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        tail = max(spans)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
            logprobs = torch.log_softmax(logits[:, -tail - 1:-1].float(), dim=-1)
            token_lp = logprobs.gather(-1, input_ids[:, -tail:].unsqueeze(-1)).squeeze(-1)
        out = np.empty(len(pairs), dtype=np.float32)
        for i, span in enumerate(spans):
            out[i] = float(token_lp[i, tail - span:].mean().exp())
        return out

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        out = np.zeros((len(pairs), 1), dtype=np.float32)
        if self.mode == "query-likelihood":
            for start in range(0, len(pairs), self.batch_size):
                out[start:start + self.batch_size, 0] = self._query_likelihood(pairs[start:start + self.batch_size])
            return out
        for start in range(0, len(pairs), self.batch_size):
            prompts = [self._prompt(q, d) for q, d in pairs[start:start + self.batch_size]]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            # left padding: positions must count real tokens only, as generate() does
            positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with self.torch.inference_mode():
                logits = self.model(**batch, position_ids=positions).logits[:, -1, :].float()
            logprobs = self.torch.log_softmax(logits, dim=-1)
            yes = self.torch.logsumexp(logprobs[:, self.yes_ids], dim=-1)
            no = self.torch.logsumexp(logprobs[:, self.no_ids], dim=-1)
            out[start:start + len(prompts), 0] = self.torch.sigmoid(yes - no).cpu().numpy()
        return out


class RetryableError(Exception):
    pass


class _NotSent(Exception):
    """A pair skipped because another pair already failed for good."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Answer no redirect with a new request: urllib then raises the 3xx reply as an HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class HttpJudge:
    def __init__(self, base_url: str, model: str, *, system: str, template: str, instruction: str,
                 api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 6, backoff: float = 0.5, top_logprobs: int = 20):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.system, self.template, self.instruction = system, template, instruction
        self.api_key_env = api_key_env
        self.concurrency, self.timeout = concurrency, timeout
        self.max_retries, self.backoff, self.top_logprobs = max_retries, backoff, top_logprobs
        self.stats = {"requests": 0, "retries": 0, "no_yes_no_token": 0}
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_RefuseRedirects)

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env or "", "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _request(self, query: str, document: str) -> float:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system},
                         {"role": "user", "content": render(self.template, query, document, self.instruction)}],
            "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": self.top_logprobs,
        }
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=self._headers(), method="POST")
        self._count("requests")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                location = str(exc.headers.get("Location") or "no Location")[:200]
                raise HnmineError(f"judge endpoint {self.url} answered HTTP {exc.code}, a redirect to {location}; "
                                  "redirects are not followed, so the API key is never sent elsewhere",
                                  fix="set base_url to the address that serves /chat/completions itself") from None
            if exc.code == 429 or exc.code >= 500:
                raise RetryableError(f"HTTP {exc.code}", exc.headers.get("Retry-After")) from None
            detail = exc.read()[:200].decode("utf-8", "replace")
            raise HnmineError(f"judge endpoint {self.url} answered HTTP {exc.code}: {detail}",
                              fix="check base_url, model and the API key variable") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            raise RetryableError(str(exc), None) from None
        return self._answer(raw)

    def _answer(self, raw: bytes) -> float:
        """The score in a 200's body; a body that is no chat completion (a gateway's error page, an
        error object) is an HnmineError, so the answers received before it are still cached."""
        try:
            payload = json.loads(raw)
            return self._parse(payload)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            what = "not JSON" if isinstance(exc, json.JSONDecodeError) else f"{type(exc).__name__}: {exc}"
            raise HnmineError(f"judge endpoint {self.url} answered 200 with no chat completion ({what}): "
                              f"{raw[:120].decode('utf-8', 'replace')!r}",
                              fix="check that base_url is an OpenAI-compatible /v1 endpoint serving this model"
                              ) from None

    def _parse(self, payload: dict) -> float:
        choice = payload["choices"][0]
        content = ((choice.get("logprobs") or {}).get("content") or [])
        best: dict[str, float] = {}
        if content:
            for item in content[0].get("top_logprobs") or [content[0]]:
                word = item["token"].strip().lower()
                if word in ("yes", "no"):
                    best[word] = float(np.logaddexp(best[word], item["logprob"])) if word in best else item["logprob"]
        score = yes_probability(best.get("yes"), best.get("no"))
        if math.isnan(score):
            self._count("no_yes_no_token")
            text = (choice.get("message") or {}).get("content", "").strip().lower()
            score = 1.0 if text.startswith("yes") else 0.0 if text.startswith("no") else float("nan")
        return score

    def _with_retries(self, pair: tuple[str, str], stop: threading.Event | None = None) -> float:
        """One pair's score. A set `stop` (another pair failed for good) ends it before the next
        send, as `_NotSent`; a pair that fails for good sets it."""
        for attempt in range(self.max_retries + 1):
            if stop is not None and stop.is_set():
                raise _NotSent
            try:
                return self._request(*pair)
            except HnmineError:
                if stop is not None:
                    stop.set()
                raise
            except RetryableError as exc:
                if attempt == self.max_retries:
                    if stop is not None:
                        stop.set()
                    raise HnmineError(f"judge endpoint {self.url} failed {attempt + 1} times ({exc.args[0]})",
                                      fix="check that the server is up; scores done so far are cached and a rerun resumes") from None
                self._count("retries")
                retry_after = exc.args[1]
                delay = float(retry_after) if retry_after and str(retry_after).replace(".", "").isdigit() else \
                    self.backoff * (2 ** attempt) * (1 + random.random())
                time.sleep(min(delay, 30.0))
        raise AssertionError("unreachable")

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Scores in input order. The first pair that fails for good (an error reply, a malformed
        200, retries used up) stops the sending: no pair is sent after it, so at most the requests
        already in flight (`concurrency`) fail with it. `PartialScores` then carries every answer
        received and the count of failed pairs, so the caller can save the answers: each answered
        pair is paid for once."""
        values = np.full(len(pairs), np.nan, dtype=np.float32)
        done = np.zeros(len(pairs), dtype=bool)
        failure: HnmineError | None = None
        failed = 0
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._with_retries, pair, stop): i for i, pair in enumerate(pairs)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    values[i] = future.result()
                    done[i] = True
                except (CancelledError, _NotSent):
                    continue
                except HnmineError as exc:
                    failed += 1
                    if failure is None:
                        failure = exc
                        for other in futures:
                            other.cancel()
        if failure is not None:
            raise PartialScores(done, values.reshape(-1, 1), failure, failed)
        return values.reshape(-1, 1)


class PartialScores(Exception):  # noqa: N818 (a result, not only an error)
    """A scorer failed part-way: `values[done]` are real answers to keep, `error` says what broke
    first, `failed` counts the pairs that failed (the rest were not sent)."""

    def __init__(self, done: np.ndarray, values: np.ndarray, error: HnmineError, failed: int = 1):
        super().__init__(str(error))
        self.done, self.values, self.error, self.failed = done, values, error, failed
