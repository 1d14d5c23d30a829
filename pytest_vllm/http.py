"""A small typed client for the OpenAI-compatible server, on the wire, with the timeouts CI needs.

Raw HTTP (httpx) where the wire itself is the subject: status codes (401 checks), error bodies,
`/health`, `/v1/models`, `/metrics`, and SSE chunk timing (TTFT, whose clock starts at the request's
send trace). Chat completions as applications make them go through the official `openai` client
(`pytest_vllm.sdk`, `Deployment.openai()`).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .errors import VllmTestError
from .metrics import Sample, parse_metrics
from .streaming import StreamResult, stream_chat


class ApiError(VllmTestError):
    """A non-2xx answer, with vLLM's own error message when it sent one."""

    def __init__(self, status: int, body: str, url: str) -> None:
        self.status, self.body, self.url = status, body, url
        super().__init__(f"{url} answered {status}: {error_message(body)}{_hint(status)}")


def error_message(body: str) -> str:
    try:
        data = json.loads(body)
        err = data.get("error", data)
        return str(err.get("message", err) if isinstance(err, dict) else err)
    except (ValueError, AttributeError):
        return body[:500]


def _hint(status: int) -> str:
    if status == 401:
        return ("\n  the server wants an API key and this one was refused: pass --api-key, or set the variable "
                "named by the profile's auth.api_key_env (or put it in .env); check it matches the server's")
    return ""


class ServerGone(VllmTestError):
    """The connection broke: the server stopped answering (crashed, restarted or was killed)."""


def gone(base_url: str, exc: Exception) -> ServerGone:
    """A transport error (httpx's, or aiohttp's in the throughput levels) as one message an operator can act on."""
    return ServerGone(f"{base_url} stopped answering ({type(exc).__name__}: {exc}): the server may have crashed "
                      "or restarted; look at its log (reports/runs/.../logs)")


def _transport(call: Any) -> Any:
    def wrapper(self: VllmClient, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(self, *args, **kwargs)
        except httpx.TransportError as exc:
            raise gone(self.base_url, exc) from exc
    return wrapper


class VllmClient:
    """Calls one deployment. Paths are relative to the server root (`/health`, `/v1/models`)."""

    def __init__(self, base_url: str, api_key: str | None, model: str, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def headers(self, auth: bool = True, api_key: str | None = None) -> dict[str, str]:
        key = api_key if api_key is not None else self.api_key
        return {"Authorization": f"Bearer {key}"} if auth and key else {}

    @_transport
    def get(self, path: str, *, auth: bool = True, api_key: str | None = None) -> httpx.Response:
        return self._http.get(self.base_url + path, headers=self.headers(auth, api_key))

    @_transport
    def post(self, path: str, payload: dict[str, Any], *, auth: bool = True,
             api_key: str | None = None) -> httpx.Response:
        return self._http.post(self.base_url + path, json=payload, headers=self.headers(auth, api_key))

    def chat_payload(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, **params}

    @_transport
    def stream_chat(self, messages: list[dict[str, Any]], **params: Any) -> StreamResult:
        """Streamed chat completion, timed (see pytest_vllm.streaming). Non-200 is returned, not raised."""
        return stream_chat(self._http, self.base_url + "/v1/chat/completions",
                           self.chat_payload(messages, params), self.headers(), self.timeout)

    @_transport
    def stream_completion(self, prompt: str, **params: Any) -> StreamResult:
        """Streamed /v1/completions, timed like a chat; non-200 is returned, not raised."""
        return stream_chat(self._http, self.base_url + "/v1/completions",
                           {"model": self.model, "prompt": prompt, **params}, self.headers(), self.timeout)

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body (the model filled in) and return the JSON answer; raises ApiError on non-200."""
        response = self.post(path, {"model": self.model, **payload})
        if response.status_code != 200:
            raise ApiError(response.status_code, response.text, path)
        return response.json()

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Prompt tokens of a chat as the server counts them (its /tokenize, chat template applied)."""
        return int(self.call("/tokenize", {"messages": messages})["count"])

    def metrics(self) -> list[Sample]:
        response = self.get("/metrics", auth=False)
        if response.status_code != 200:
            raise ApiError(response.status_code, response.text, "/metrics")
        return parse_metrics(response.text)

    def models(self) -> list[dict[str, Any]]:
        response = self.get("/v1/models")
        if response.status_code != 200:
            raise ApiError(response.status_code, response.text, "/v1/models")
        return response.json().get("data", [])
