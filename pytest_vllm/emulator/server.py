"""The emulator's HTTP server: real sockets, real SSE, vLLM's routes, status codes and checks.

    with EmulatorServer(port=0, faults=["think_leak"], api_key="k") as emu:
        emu.base_url   # http://127.0.0.1:<port>

Routes: GET /health, /version, /v1/models, /metrics; POST /v1/chat/completions, /v1/completions, /tokenize,
/detokenize (those three in `endpoints`); and, for the
instrument's own users, GET /emulator/last and /emulator/requests (the injected timing of each
request: the TTFT ground truth) and POST /emulator/reset (empty prefix cache, counters, records).
Every chat response also carries `x-emulator-ttft-ms`, `x-emulator-prompt-tokens` and
`x-emulator-cached-tokens`. It runs in a thread (stdlib ThreadingHTTPServer) or as
`python -m pytest_vllm.emulator`. It is a test instrument and says so: /version, `owned_by`,
`system_fingerprint`, the `server` header, /metrics and its first log line.
"""

from __future__ import annotations

import collections
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .. import interrupts
from .answers import Scripts
from .config import EmulatedModel
from .endpoints import CompletionChunks, Vocabulary, completion_body, prompt_of, text_tokens, tokenize_body
from .faults import parse_faults
from .latency import Clock, LatencyModel, PrefixCache, Timing
from .parsing import Output, present
from .prometheus import Metrics
from .protocol import ChunkWriter, chat_body, dumps, error_body, models_body
from .tokens import render_prompt
from .vision import ImageError, decode_data_url

VERSION = "0.1.0"
SERVER_NAME = f"pytest-vllm-emulator/{VERSION}"
# vLLM's own messages (vllm/renderers/online_renderer.py, v1/engine/exceptions.py,
# multimodal/processing/context.py), so the suites' diagnoses are tested against the real wording.
AUTO_TOOL_MESSAGE = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
FORCED_TOOL_MESSAGE = "tool_choice={} requires --tool-call-parser to be set"
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
IMAGE_LIMIT_MESSAGE = "At most {limit} image(s) may be provided in one prompt."
NOT_MULTIMODAL_MESSAGE = "{model} is not a multimodal model"


class RequestError(Exception):
    """An answer other than 200, with vLLM's body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status, self.body = status, body

    @classmethod
    def bad(cls, message: str, param: str | None = None) -> RequestError:
        return cls(400, error_body(message, param=param))


class EmulatorServer:
    """An OpenAI-compatible server that answers like vLLM, with known latency and switchable faults."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, faults: Iterable[str] | str | None = None,
                 api_key: str | None = None, latency: LatencyModel | None = None,
                 model: EmulatedModel | None = None, cases_dir: Path | None = None,
                 slow_start_s: float = 3600.0, log_path: Path | None = None,
                 on_crash: Callable[[], None] | None = None, degrade_after_s: float = 120.0) -> None:
        self.host, self.port = host, port
        self.faults = parse_faults(faults)
        self.api_key = api_key
        self.latency = latency or LatencyModel()
        self.model = model or EmulatedModel()
        self.scripts = Scripts.from_dir(cases_dir)
        self.slow_start_s = slow_start_s
        self.degrade_after_s = degrade_after_s
        self.first_generation_at: float | None = None  # fault 'degrading' counts from here
        self.vocabulary = Vocabulary()
        self.log_path = log_path
        self.on_crash = on_crash
        self.cache = PrefixCache(self.latency.block_size, self.latency.cache_blocks)
        self.clock = Clock(self.latency)
        self.metrics = Metrics(self.model.served_name, self.latency.block_size, self.model.prefix_caching, VERSION)
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=10000)
        self.log_lines: collections.deque[str] = collections.deque(maxlen=1000)
        self.lock = threading.Lock()
        self.dead = False
        self.started_at = 0.0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.dead

    def start(self) -> EmulatorServer:
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.emulator = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"emulator-{self.port}", daemon=True)
        with interrupts.to_the_main_thread():
            self._thread.start()
        self.log(f"pytest-vllm emulator {VERSION} (a test instrument, NOT vLLM) listening on {self.base_url}; "
                 f"model {self.model.served_name}; faults: {', '.join(sorted(self.faults)) or 'none'}")
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def crash(self) -> None:
        """Fault 'crash': stop listening at once, like a process that died."""
        self.dead = True
        self.log("emulated crash (fault 'crash'): the server stops answering now")
        httpd = self._httpd
        if httpd is not None:
            threading.Thread(target=lambda: (httpd.shutdown(), httpd.server_close()), daemon=True).start()
        if self.on_crash is not None:
            self.on_crash()

    def log(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        self.log_lines.append(stamped)
        if self.log_path is not None:
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(stamped + "\n")
        else:
            print(stamped, file=sys.stderr, flush=True)

    def reset(self) -> None:
        with self.lock:
            self.cache.clear()
            self.records.clear()
            self.metrics.reset()

    @property
    def starting(self) -> bool:
        return "slow_start" in self.faults and time.monotonic() - self.started_at < self.slow_start_s

    @property
    def degraded(self) -> bool:
        """Fault 'degrading': the engine has failed, degrade_after_s seconds after the first generation request
        (not after start: how long a test run takes to get going must not matter)."""
        first = self.first_generation_at
        return "degrading" in self.faults and first is not None and time.monotonic() - first >= self.degrade_after_s

    # -- chat completions ---------------------------------------------------------------------
    def check_request(self, req: dict[str, Any]) -> list[bytes]:
        """vLLM's validation, in its order; returns the decoded images."""
        model = self.model
        if req.get("model") not in (None, model.served_name):
            raise RequestError(404, error_body(f"The model `{req.get('model')}` does not exist. Valid aliases: "
                                               f"{model.served_name}.", "NotFoundError", 404, "model"))
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise RequestError.bad("1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', "
                                   "'msg': 'Field required'}", "body.messages")
        max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
        if max_tokens is not None and max_tokens > model.max_model_len:
            raise RequestError.bad(f"max_tokens={max_tokens} cannot be greater than max_model_len="
                                   f"{model.max_model_len}. Please request fewer output tokens.", "max_tokens")
        self._check_tools(req)
        urls = [p["image_url"]["url"] if isinstance(p.get("image_url"), dict) else p.get("image_url", "")
                for m in messages if isinstance(m.get("content"), list)
                for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url"]
        if urls and not model.vision:
            raise RequestError.bad(NOT_MULTIMODAL_MESSAGE.format(model=model.served_name))
        if len(urls) > model.max_images and "image_limit_not_enforced" not in self.faults:
            raise RequestError.bad(IMAGE_LIMIT_MESSAGE.format(limit=model.max_images))
        try:
            return [decode_data_url(u) for u in urls]
        except ImageError as exc:
            raise RequestError.bad(str(exc)) from None

    def _check_tools(self, req: dict[str, Any]) -> None:
        tools = req.get("tools")
        choice = req.get("tool_choice", "auto" if tools else None)
        if choice in (None, "none"):
            return
        if not tools:
            raise RequestError.bad("When using `tool_choice`, `tools` must be set.", "tool_choice")
        names = [t.get("function", {}).get("name") for t in tools]
        if isinstance(choice, dict) and choice.get("function", {}).get("name") not in names:
            raise RequestError.bad("The tool specified in `tool_choice` does not match any of the specified "
                                   "`tools`", "tool_choice")
        if self.model.tool_parser is None or "no_tool_parser" in self.faults:
            if choice == "auto":
                raise RequestError.bad(AUTO_TOOL_MESSAGE)
            described = f'function "{choice["function"]["name"]}"' if isinstance(choice, dict) else f'"{choice}"'
            raise RequestError.bad(FORCED_TOOL_MESSAGE.format(described))

    def plan(self, req: dict[str, Any], images: list[bytes]) -> tuple[Output, Timing, dict[str, Any]]:
        """What to answer and when: the presented output, its timing, and the record kept for clients."""
        answer = self.scripts.answer(req, images, self.faults)
        output = present(answer, req, self.model, self.faults)
        tokens = render_prompt(req["messages"], req.get("tools"), images, self.model.image_tokens)
        return output, *self._schedule(req, tokens, output, "chatcmpl")

    def plan_completion(self, req: dict[str, Any]) -> tuple[Output, Timing, dict[str, Any]]:
        """/v1/completions: the model's generic reply to the prompt text, no reasoning, no tools."""
        prompt = req.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise RequestError.bad("the emulator takes a non-empty string 'prompt'", "prompt")
        chat_like = {"messages": [{"role": "user", "content": prompt}]}
        answer = self.scripts.answer(chat_like, [], self.faults)
        output = present(answer, {"max_tokens": 16, **req, "chat_template_kwargs": {"enable_thinking": False}},
                         self.model, self.faults)
        return output, *self._schedule(req, text_tokens(prompt), output, "cmpl")

    def _schedule(self, req: dict[str, Any], tokens: list[str], output: Output,
                  id_prefix: str) -> tuple[Timing, dict[str, Any]]:
        """vLLM's context-length check, then the prefix cache and the latency model; the record kept."""
        max_tokens = req.get("max_completion_tokens") or req.get("max_tokens") or 0
        if len(tokens) + max_tokens > self.model.max_model_len and "context_limit_not_enforced" not in self.faults:
            raise RequestError.bad(f"This model's maximum context length is {self.model.max_model_len} tokens. "
                                   f"However, your request has {len(tokens)} input tokens and asks for "
                                   f"{max_tokens} output tokens. Please reduce the length of the input messages.")
        with self.lock:
            if self.first_generation_at is None:
                self.first_generation_at = time.monotonic()
            cached = self.cache.lookup_and_insert(tokens) if self.model.prefix_caching else 0
            uncached = len(tokens) if "no_cache_speedup" in self.faults else None
            timing = self.clock.timing(len(tokens), cached, output.completion_tokens, uncached)
            record = {"id": f"{id_prefix}-{secrets.token_hex(8)}", "prompt_tokens": len(tokens),
                      "cached_tokens": cached, "ttft_ms": round(timing.ttft_s * 1000, 3),
                      "e2e_ms": round(timing.e2e_s * 1000, 3), "completion_tokens": output.completion_tokens,
                      "finish_reason": output.finish_reason, "stream": bool(req.get("stream")),
                      "faults": sorted(self.faults)}
            self.records.append(record)
        return timing, record


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    emulator: EmulatorServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return  # a client that hung up (timeouts, cancelled streams) is not the server's problem
        self.emulator.log(f"internal error while answering {client_address}: {error!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE chunks must leave at once, or TTFT gains ~40 ms
    server_version = SERVER_NAME
    sys_version = ""

    @property
    def emu(self) -> EmulatorServer:
        return self.server.emulator  # type: ignore[attr-defined]  # set on _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are logged by _respond with what matters (tokens, TTFT)

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _read_body(self) -> bytes:
        """Read the whole body first: an answer sent before it would desync a keep-alive connection."""
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _parse_json(raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw or b"null")
        except ValueError as exc:
            raise RequestError(400, error_body(f"1 validation error:\n  {{'type': 'json_invalid', 'msg': 'JSON "
                                               f"decode error', 'ctx': {{'error': '{exc}'}}}}", "Bad Request",
                                               400, "body")) from None
        if not isinstance(data, dict):
            raise RequestError(400, error_body("Input should be a valid dictionary", "Bad Request", 400, "body"))
        return data

    def _authorized(self) -> bool:
        if "unauthorized_401" in self.emu.faults:
            return False
        key = self.emu.api_key
        if not key:
            return True
        scheme, _, token = (self.headers.get("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(token, key)

    def _gate(self) -> bool:
        """Common checks before routing; False when an answer (or silence) was already given."""
        if self.emu.dead:
            self.close_connection = True
            return False
        path = self.path.split("?")[0]
        if self.emu.degraded and not path.startswith("/emulator"):
            self._send(503, error_body(ENGINE_DEAD_MESSAGE, "ServiceUnavailableError", 503))
            return False
        if self.emu.starting and not path.startswith("/emulator"):
            self.close_connection = True  # no answer at all: a starting vLLM is not listening yet
            return False
        if path.startswith("/v1") and not self._authorized():
            self._send(401, {"error": "Unauthorized"})
            return False
        return True

    # -- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if not self._gate():
            return
        emu, path = self.emu, self.path.split("?")[0]
        if path == "/health":
            self._send(503 if "unhealthy_503" in emu.faults else 200, b"")
        elif path == "/version":
            self._send(200, {"version": SERVER_NAME, "note": "pytest-vllm emulator: a test instrument, not vLLM"})
        elif path == "/v1/models":
            self._send(200, models_body(emu.model.served_name, emu.model.max_model_len, int(time.time())))
        elif path == "/metrics":
            self._send(200, emu.metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
        elif path in ("/emulator/last", "/emulator/requests"):
            with emu.lock:
                records = list(emu.records)
            self._send(200, (records[-1] if records else {}) if path.endswith("last") else records)
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        raw = self._read_body()
        if not self._gate():
            return
        emu, path = self.emu, self.path.split("?")[0]
        if path == "/emulator/reset":
            emu.reset()
            self._send(200, {"reset": True})
            return
        if path in ("/v1/completions", "/tokenize", "/detokenize"):
            self._other_route(path, raw)
            return
        if path != "/v1/chat/completions":
            self._send(404, {"detail": "Not Found"})
            return
        try:
            req = self._parse_json(raw)
            t0 = time.perf_counter()  # the latency model's clock starts once the request is read
            self._engine_dead_if_faulted()
            if "crash" in emu.faults:
                self.close_connection = True
                emu.crash()
                return
            images = emu.check_request(req)
            output, timing, record = emu.plan(req, images)
        except RequestError as exc:
            self._refuse(path, exc)
            return
        self._respond(req, output, timing, record, t0)

    def _engine_dead_if_faulted(self) -> None:
        if "http_5xx" in self.emu.faults:  # as vLLM answers once its engine has died
            raise RequestError(500, error_body(ENGINE_DEAD_MESSAGE, "InternalServerError", 500))

    def _refuse(self, path: str, exc: RequestError) -> None:
        """An error answer, logged as vLLM logs it."""
        self.emu.log(f"POST {path} {exc.status}: {json.dumps(exc.body)[:300]}")
        self._send(exc.status, exc.body)

    def _respond(self, req: dict[str, Any], output: Output, timing: Timing, record: dict[str, Any],
                 t0: float) -> None:
        emu = self.emu
        headers = {"x-request-id": record["id"], "x-emulator-ttft-ms": str(record["ttft_ms"]),
                   "x-emulator-prompt-tokens": str(record["prompt_tokens"]),
                   "x-emulator-cached-tokens": str(record["cached_tokens"])}
        emu.metrics.started()
        model, field = emu.model.served_name, emu.model.reasoning_field
        try:
            if not req.get("stream"):
                _sleep_until(t0 + timing.e2e_s)
                self._send(200, chat_body(output, request_id=record["id"], model=model,
                                          prompt_tokens=record["prompt_tokens"], reasoning_field=field), headers)
            else:
                self._stream(req, output, timing, record, headers, t0)
        finally:
            emu.metrics.finished(prompt_tokens=record["prompt_tokens"], cached_tokens=record["cached_tokens"],
                                 completion_tokens=record["completion_tokens"], ttft_s=timing.ttft_s,
                                 finish_reason=output.finish_reason)
        emu.log(f"POST /v1/chat/completions 200 stream={record['stream']} prompt_tokens={record['prompt_tokens']} "
                f"cached={record['cached_tokens']} ttft_ms={record['ttft_ms']} "
                f"completion_tokens={record['completion_tokens']} finish={output.finish_reason}")

    def _stream(self, req: dict[str, Any], output: Output, timing: Timing, record: dict[str, Any],
                headers: dict[str, str], t0: float) -> None:
        writer = ChunkWriter(record["id"], self.emu.model.served_name, self.emu.model.reasoning_field, output,
                             self.emu.faults)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()
        due = t0 + timing.ttft_s
        _sleep_until(due)
        self._chunk(writer.role())
        for i in range(len(output.pieces)):
            if i:
                due += timing.token_gaps_s[i - 1]
                _sleep_until(due)
            self._chunk(writer.token(i))
        closing = writer.closing()
        if closing:
            self._chunk(closing)
        if (req.get("stream_options") or {}).get("include_usage"):
            self._chunk(writer.usage(record["prompt_tokens"]))
        self._chunk(writer.done())
        self._chunk(b"")


    # -- /v1/completions, /tokenize, /detokenize (shapes in endpoints.py) --------------------------
    def _other_route(self, path: str, raw: bytes) -> None:
        emu = self.emu
        try:
            req = self._parse_json(raw)
            t0 = time.perf_counter()
            if req.get("model") not in (None, emu.model.served_name):
                raise RequestError(404, error_body(f"The model `{req.get('model')}` does not exist.",
                                                   "NotFoundError", 404, "model"))
            if path == "/tokenize":
                try:
                    ids = emu.vocabulary.ids(prompt_of(req, emu.model.image_tokens))
                except ValueError as exc:
                    raise RequestError.bad(str(exc)) from None
                self._send(200, tokenize_body(ids, emu.model.max_model_len))
                return
            if path == "/detokenize":
                try:
                    self._send(200, {"prompt": emu.vocabulary.text(list(req.get("tokens") or []))})
                except ValueError as exc:
                    raise RequestError.bad(str(exc), "tokens") from None
                return
            self._engine_dead_if_faulted()
            output, timing, record = emu.plan_completion(req)
        except RequestError as exc:
            self._refuse(path, exc)
            return
        self._respond_completion(req, output, timing, record, t0)

    def _respond_completion(self, req: dict[str, Any], output: Output, timing: Timing, record: dict[str, Any],
                            t0: float) -> None:
        emu, model = self.emu, self.emu.model.served_name
        headers = {"x-request-id": record["id"], "x-emulator-ttft-ms": str(record["ttft_ms"])}
        emu.metrics.started()
        try:
            if not req.get("stream"):
                _sleep_until(t0 + timing.e2e_s)
                self._send(200, completion_body(output, request_id=record["id"], model=model,
                                                prompt_tokens=record["prompt_tokens"]), headers)
                return
            chunks = CompletionChunks(record["id"], model, output)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream; charset=utf-8")
            self.send_header("transfer-encoding", "chunked")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            due = t0 + timing.ttft_s
            for i in range(len(output.pieces)):
                due += timing.token_gaps_s[i - 1] if i else 0.0
                _sleep_until(due)
                self._chunk(chunks.token(i))
            if (req.get("stream_options") or {}).get("include_usage"):
                self._chunk(chunks.usage(record["prompt_tokens"]))
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        finally:
            emu.metrics.finished(prompt_tokens=record["prompt_tokens"], cached_tokens=record["cached_tokens"],
                                 completion_tokens=record["completion_tokens"], ttft_s=timing.ttft_s,
                                 finish_reason=output.finish_reason)
            emu.log(f"POST /v1/completions 200 stream={record['stream']} prompt_tokens={record['prompt_tokens']} "
                    f"ttft_ms={record['ttft_ms']} completion_tokens={record['completion_tokens']}")


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)
