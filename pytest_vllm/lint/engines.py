"""Which compose services run vLLM, and the argv vLLM's own parser receives from each.

A service is a vLLM engine when its image is a vLLM image (`vllm/vllm-openai:v0.11.0`, `rocm/vllm`,
`opea/vllm-gaudi`, a local `vllm-cpu-env` ...), or when its entrypoint/command runs `vllm serve` or
`python -m vllm.entrypoints.openai.api_server` (also inside `bash -c "..."`). Never because "vllm" appears
somewhere in an argument (`--inference_server=vllm:5000` is a client) or in a service name (`mockvllm`).

The official images' ENTRYPOINT already is vLLM's server (`vllm serve` today, the api_server module
before): their `command:` holds only the server's arguments, so a `command: vllm serve ...` on such an
image hands vLLM the words `vllm serve` as arguments. When `entrypoint:` is replaced, the prefix belongs
in the command and is stripped before the flags are read.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .composefile import as_argv

SERVER_MODULES = ("vllm.entrypoints.openai.api_server",)
_VLLM_IMAGE_NAME = re.compile(r"vllm(?:[-_][\w.-]*)?")  # vllm, vllm-openai, vllm-rocm, vllm-cpu-env, ...
_SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class EngineCall:
    """How one service starts vLLM."""

    args: list[str]  # what vLLM's argument parser gets
    key_of: Callable[[int], str]  # compose key where args[i] is written, e.g. "services.vllm.command[4]"
    doubled: str | None = None  # `vllm serve ...` written in command while the image's entrypoint runs it


def image_parts(image: str) -> tuple[str, str]:
    """('vllm/vllm-openai', 'v0.11.0') from 'docker.io/vllm/vllm-openai:v0.11.0' (digest dropped)."""
    name = image.split("@", 1)[0]
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    parts = repo.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # registry host
    return "/".join(parts), tag


def is_vllm_image(image: str) -> bool:
    return bool(image) and bool(_VLLM_IMAGE_NAME.fullmatch(image_parts(image)[0].rsplit("/", 1)[-1]))


def runs_server_entrypoint(image: str) -> bool:
    """The image's own ENTRYPOINT starts vLLM's server (the project's published images)."""
    return image_parts(image)[0].startswith("vllm/vllm-openai")


def engine_call(data: dict[str, Any], key: Callable[..., str] = lambda *parts: ".".join(parts)) -> EngineCall | None:
    """The vLLM invocation of a service (compose's model of it), or None when it runs no vLLM.

    `key(part)` names a key of the service for findings (e.g. services.NAME.command[3]).
    """
    image = str(data.get("image") or "")
    entry, command = as_argv(data.get("entrypoint")), as_argv(data.get("command"))
    full = entry + command

    def key_of_full(i: int) -> str:
        return key("entrypoint") if i < len(entry) else key(f"command[{i - len(entry)}]")

    found = _find_server(full)
    if found is not None:
        start, inner = found
        args = inner if inner is not None else full[start:]
        if inner is not None:  # inside a `bash -c "..."` string: every arg lives in that one element
            element = key_of_full(start)
            return EngineCall(args, lambda _i: element)
        doubled = None
        if not entry and runs_server_entrypoint(image):
            doubled = " ".join(full[:start])
        return EngineCall(args, lambda i: key_of_full(start + i), doubled)
    if not entry and is_vllm_image(image):
        return EngineCall(command, lambda i: key(f"command[{i}]"))
    return None


def _find_server(argv: list[str]) -> tuple[int, list[str] | None] | None:
    """(index of the first server argument, None) or (index of a shell string, its server arguments)."""
    for i, token in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if token.rsplit("/", 1)[-1] == "vllm" and following == "serve":
            return i + 2, None
        if token == "-m" and following in SERVER_MODULES:
            return i + 2, None
        if any(c.isspace() for c in token) and ("vllm" in token):
            try:
                words = shlex.split(token)
            except ValueError:
                continue
            inner = _find_server(words)
            if inner is not None and inner[1] is None:
                rest = words[inner[0]:]
                cut = next((j for j, w in enumerate(rest) if w in _SHELL_SEPARATORS), len(rest))
                return i, rest[:cut]
    return None
