"""The deployment as the team's applications see it: chat completions through the official `openai` client.

The functional suites (health chat, reasoning, tools, vision) call the server the way applications
do: `openai.OpenAI` with the deployment's key and timeout and no retries (a retry would hide a
failure), streamed answers through the SDK's own helper `chat.completions.stream()` (which
accumulates tool-call deltas as applications do, and parses the arguments of `strict` tools).
Checks read the SDK's typed objects; vLLM's own fields (`reasoning`, `reasoning_content`) are the
SDK's extra fields (`model_extra`). Raw httpx (`pytest_vllm.http`) stays where the wire itself is
the subject: TTFT timing, 401 checks, SSE framing.

Failures are translated into what an operator acts on: a non-2xx answer becomes `ApiError` with
vLLM's message, a broken connection `ServerGone`, and an answer the SDK itself cannot read
`SdkRejected`, quoting the SDK's error (the server's answer breaks every application built on it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from openai.lib.streaming.chat import ParsedChatCompletionSnapshot
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion
from pydantic import BaseModel

from .errors import VllmTestError
from .http import ApiError, ServerGone

REASONING_FIELDS = ("reasoning", "reasoning_content")  # vLLM > 0.11 and <= 0.11 (the seeds' version)
CHAT_PATH = "/v1/chat/completions"



class SdkRejected(VllmTestError):
    """The OpenAI SDK could not read the server's answer: applications built on the SDK break on it."""


class CutAtMaxTokens(VllmTestError):
    """The SDK's stream helper refused a `strict`-tool answer cut at max_tokens (finish_reason=length)."""


def reasoning_of(message: BaseModel | None) -> str:
    """The reasoning text vLLM's reasoning parser put beside the content, under either field name."""
    extra = (message.model_extra if message is not None else None) or {}
    return next((str(extra[name]) for name in REASONING_FIELDS if extra.get(name)), "")


def client_for(base_url: str, api_key: str | None, timeout: float) -> openai.OpenAI:
    """An application's client on a deployment: its key, one timeout per call, no silent retries."""
    return openai.OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key or "EMPTY", timeout=timeout,
                         max_retries=0)


@dataclass
class Streamed:
    """A streamed answer as the SDK's helper delivered it: every typed chunk, then the accumulated completion."""

    chunks: list[ChatCompletionChunk]
    completion: ParsedChatCompletion[Any] | ParsedChatCompletionSnapshot

    @property
    def message(self) -> Any:
        return self.completion.choices[0].message

    @property
    def finish_reason(self) -> str | None:
        return self.completion.choices[0].finish_reason


class OpenAIChat:
    """Chat completions on one deployment through the official SDK, with failures an operator can act on."""

    def __init__(self, client: openai.OpenAI, model: str) -> None:
        self.client = client
        self.model = model

    @property
    def base_url(self) -> str:
        return str(self.client.base_url).rstrip("/").removesuffix("/v1")

    def close(self) -> None:
        self.client.close()

    def create(self, messages: list[dict[str, Any]], **params: Any) -> ChatCompletion:
        """A non-streamed completion, as `client.chat.completions.create` returns it."""
        with self._api_errors():
            return self.client.chat.completions.create(model=self.model, messages=messages, **params)

    def stream(self, messages: list[dict[str, Any]], **params: Any) -> Streamed:
        """A streamed completion read with the SDK's helper (usage requested, as include_usage clients do)."""
        params.setdefault("stream_options", {"include_usage": True})
        with self._api_errors(), \
                self.client.chat.completions.stream(model=self.model, messages=messages, **params) as stream, \
                _sdk_reading():
            chunks = [event.chunk for event in stream if event.type == "chunk"]
            snapshot = stream.current_completion_snapshot
            # get_final_completion() raises LengthFinishReasonError on any answer cut at max_tokens, even
            # plain text: a cut answer is read from the accumulated snapshot, as such applications must.
            cut = any(choice.finish_reason == "length" for choice in snapshot.choices)
            return Streamed(chunks, snapshot if cut else stream.get_final_completion())

    @contextlib.contextmanager
    def _api_errors(self) -> Iterator[None]:
        try:
            yield
        except openai.APIStatusError as exc:
            raise ApiError(exc.status_code, exc.response.text, CHAT_PATH) from None
        except openai.APITimeoutError:
            raise ServerGone(f"{self.base_url} did not answer within {self.client.timeout}s (the profile's "
                             "timeouts.request): the server hangs or is overloaded; look at its log") from None
        except (openai.APIConnectionError, httpx.TransportError) as exc:  # openai < 3 lets httpx's cut streams through
            cause = exc.__cause__ or exc
            raise ServerGone(f"{self.base_url} stopped answering ({type(cause).__name__}: {cause}): the server may "
                             "have crashed or restarted; look at its log (reports/runs/.../logs)") from None
        except openai.APIError as exc:  # an error event inside a stream that had started with 200
            raise SdkRejected(f"the stream carried an error after its 200 start: {exc.message}") from None


@contextlib.contextmanager
def _sdk_reading() -> Iterator[None]:
    """Around the SDK reading a stream: what its accumulators and parsers raise becomes SdkRejected."""
    try:
        yield
    except openai.LengthFinishReasonError:
        raise CutAtMaxTokens("the answer was cut at max_tokens (finish_reason=length) before it was complete: "
                             "the OpenAI SDK's stream helper refuses to parse it (LengthFinishReasonError)") from None
    except json.JSONDecodeError as exc:
        raise SdkRejected(f"the OpenAI SDK could not parse JSON in the streamed answer (JSONDecodeError: {exc}): "
                          "a chunk or the tool-call arguments are not valid JSON") from None
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise SdkRejected(f"the OpenAI SDK (openai {openai.__version__}) could not read the streamed answer: "
                          f"{type(exc).__name__}: {exc}. Every application using the official client's stream "
                          "helper breaks on this server") from None
