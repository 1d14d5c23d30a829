"""What a profile may say: one frozen dataclass per section, each key with its type, default and meaning.

This is the one place defaults live. Validation (`pytest_vllm.profile`) checks YAML against `SCHEMA`,
derived from these classes, and the README's profile table is `markdown_table()` (a test keeps the two
equal; `python -m pytest_vllm profile-schema --write README.md` regenerates it).

Readers use attributes (`profile.timeouts.health`). A section is also a read-only mapping of the keys
that are set (not None), so code written against the former dict sections (branches in flight when
the sections became typed) keeps working: `"tool_parser" in profile.capabilities`,
`profile.thresholds.get("ttft_hit_ms_max")`. New code reads attributes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .backends.registry import KINDS

Types = tuple[type, ...]
DEFAULT_API_KEY_ENV = "VLLM_API_KEY"


def key(meaning: str, types: Types, default: Any = None) -> Any:
    """A section key: its meaning, the YAML types it accepts, its default (None: not set)."""
    metadata = {"meaning": meaning, "types": types}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, eq=False)  # equality from Mapping: a section equals a dict of the same keys
class Section(Mapping[str, Any]):
    """Base of the sections: typed attributes, plus a read-only mapping view of the keys that are set."""

    def __getitem__(self, name: str) -> Any:
        value = getattr(self, name, None) if name in self.keys_allowed() else None
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.keys_allowed() if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def keys_allowed(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True, eq=False)
class DeploymentSection(Section):
    backend: str = key(" \\| ".join(f"`{k}`" for k in KINDS), (str,), "process")
    host: str = key("address the server binds and we call", (str,), "127.0.0.1")
    port: int = key("HTTP port of the OpenAI-compatible server", (int,), 8000)
    env: dict[str, Any] = key("extra environment variables for the server", (dict,), {})
    compose_files: list[str] | None = key("compose files, relative to the profile file", (list, str))
    service: str | None = key("compose service that runs vLLM", (str,))
    env_file: str | None = key("env file passed to compose as --env-file (relative to the profile)", (str,))
    base_url: str | None = key("external backend: URL of a server that is already running", (str,))
    extra_args: list[str] = key("raw extra command-line arguments appended after the flags", (list,), [])
    faults: list[str] = key("emulator backend: faults to inject (a test instrument)", (list,), [])
    emulator: dict[str, Any] = key("emulator backend: {latency: {...}, slow_start_s: N, degrade_after_s: N}",
                                   (dict,), {})


@dataclass(frozen=True, eq=False)
class ModelSection(Section):
    path: str | None = key("model id or local path given to --model; `@tiny` = the built tiny model", (str,))
    served_name: str | None = key("name clients use (--served-model-name)", (str,))
    quantization: str | None = key("awq, gptq, fp8, bf16, fp16, compressed-tensors ...", (str,))
    parameters_b: float | None = key("parameter count in billions (capacity estimate)", (int, float))
    max_model_len: int | None = key("context length the deployment must expose", (int,))
    multimodal: bool | None = key("the checkpoint is a vision-language model", (bool,))


@dataclass(frozen=True, eq=False)
class AuthSection(Section):
    # None: the run uses DEFAULT_API_KEY_ENV (Profile.api_key_env); lint tells "not named" from the default
    api_key_env: str | None = key(f"environment variable holding the API key (unset: {DEFAULT_API_KEY_ENV})", (str,))
    generate: bool = key("no key given: generate a random one for this run (test servers)", (bool,), False)


@dataclass(frozen=True, eq=False)
class CapabilitiesSection(Section):
    reasoning_parser: str | None = key("the deployment claims reasoning (e.g. qwen3)", (str,))
    tool_parser: str | None = key("the deployment claims tool calling (e.g. hermes)", (str,))
    vision: bool | None = key("the deployment accepts images", (bool,))
    max_images: int | None = key("images allowed per prompt", (int,))
    semantic: bool = key("answers are meaningful (false for the random tiny model)", (bool,), True)
    embeddings: bool | None = key("the deployment serves /v1/embeddings (a pooling model)", (bool,))
    languages: list[str] = key("languages of the reasoning and tool cases to run: [en, fr] (default both)", (list,),
                               ["en", "fr"])


@dataclass(frozen=True, eq=False)
class ThresholdsSection(Section):
    kv_cache_acceleration_min: float | dict[str, float] | None = key(
        "minimum TTFT MISS/HIT ratio, or {workload: minimum}", (int, float, dict))
    ttft_hit_ms_max: float | None = key("maximum median TTFT on a cache hit", (int, float))
    ttft_miss_ms_max: float | None = key("maximum median TTFT on a cache miss", (int, float))
    regression_tolerance: float = key("TTFT slowdown against history the gate must catch (0.10 = 10%)",
                                      (int, float), 0.10)
    acceleration_tolerance: float = key("loss of MISS/HIT acceleration against history the gate must catch "
                                        "(0.10: HIT 10% slower relative to MISS)", (int, float), 0.10)
    regression_confidence: float = key("confidence of the regression test", (int, float), 0.95)
    kv_rounds: int = key("MISS/HIT rounds per measurement (and per added look)", (int,), 5)
    kv_rounds_max: int = key("rounds at most, added while the regression verdict is undecided", (int,), 40)
    peak_vram_gib_max: float | None = key("maximum peak VRAM per GPU, GiB", (int, float))
    prefix_cache_hit_rate_min: float | None = key(
        "minimum share of HIT prompt tokens served from cache (/metrics)", (int, float))
    kv_cache_free_gib_min: float | None = key("minimum KV-cache memory per GPU after loading (engine log)",
                                              (int, float))
    long_context_ttft_ms_max: float | None = key("maximum TTFT of the longest long-context prompt", (int, float))
    output_tokens_per_s_min: float | None = key("minimum output tokens/s at the highest concurrency level",
                                                (int, float))
    load_ttft_p99_ms_max: float | None = key("maximum p99 TTFT at any concurrency level", (int, float))
    load_itl_p99_ms_max: float | None = key("maximum p99 inter-token latency at any concurrency level", (int, float))
    vision_ttft_ms_max: float | None = key("maximum median TTFT with the most images", (int, float))
    soak_memory_growth_mib_max: float | None = key("maximum server RSS (and VRAM) growth during a soak",
                                                   (int, float))


@dataclass(frozen=True, eq=False)
class TimeoutsSection(Section):
    health: float = key("seconds to wait for the deployment to become healthy", (int, float), 900)
    test: float = key("pytest-timeout limit per suite test, seconds", (int, float), 300)
    request: float = key("client timeout per HTTP request, seconds", (int, float), 120)
    stop: float = key("seconds a server we started gets between SIGTERM and SIGKILL", (int, float), 2)


@dataclass(frozen=True, eq=False)
class HardwareSection(Section):
    gpus: int | None = key("number of GPUs the deployment uses", (int,))
    gpu_memory_gib: float | None = key("memory of each GPU, GiB", (int, float))
    device_ids: list[str] | None = key("GPU ids reserved for the deployment", (list,))


@dataclass(frozen=True, eq=False)
class LoadSection(Section):
    long_context_fractions: list[float] = key("prompt sizes as fractions of max_model_len", (list,), [0.5, 0.9])
    concurrency: list[int] = key("concurrency levels of the throughput sweep", (list,), [1, 4, 16])
    requests_per_level: int | None = key("requests per concurrency level (unset: 4 x the level, at least 8)",
                                         (int,))
    prompt_tokens: int = key("prompt length of throughput and soak requests, tokens", (int,), 256)
    output_tokens: int = key("output length of throughput and soak requests, tokens", (int,), 64)
    soak_rate_rps: float = key("steady request rate of --soak, requests per second", (int, float), 1.0)
    vision_rounds: int = key("TTFT rounds per image count in the vision TTFT suite", (int,), 3)


# Section name in YAML -> its class; `server` is free-form (vLLM flags) and stays a dict.
SECTIONS: dict[str, type[Section]] = {
    "deployment": DeploymentSection, "model": ModelSection, "auth": AuthSection,
    "capabilities": CapabilitiesSection, "thresholds": ThresholdsSection, "timeouts": TimeoutsSection,
    "hardware": HardwareSection, "load": LoadSection,
}
SERVER_MEANING = "vLLM flags as a mapping: `true` → `--flag`, `false` → `--no-flag`, mapping/list → JSON, " \
                 "`null` → omitted"
TOP_KEYS = {
    "description": "what this deployment is",
    "extends": "a profile name or a path relative to this file; child wins, `null` deletes an inherited key",
    "name": "the profile's name (default: the file name)",
}
# section -> {key: (accepted types, meaning)}; None: free-form
SCHEMA: dict[str, dict[str, tuple[Types, str]] | None] = {
    **{name: {f.name: (f.metadata["types"], f.metadata["meaning"]) for f in fields(cls)}
       for name, cls in SECTIONS.items()},
    "server": None,
}


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()


def markdown_table() -> str:
    """The README's profile table: every section and key, its default and meaning."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` |  | {meaning} |" for name, meaning in TOP_KEYS.items()]
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            default = _default(f)
            text = str(default).lower() if isinstance(default, bool) else str(default)
            shown = "" if default in (None, {}, []) else f"`{text}`"
            lines.append(f"| `{section}.{f.name}` | {shown} | {f.metadata['meaning']} |")
    lines.append(f"| `server.<flag>` |  | {SERVER_MEANING} |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- profile-schema: generated by python -m pytest_vllm profile-schema -->", "<!-- /profile-schema -->"


def write_readme(path: Path) -> bool:
    """Replace the table between the markers in `path`; True when it changed."""
    text = path.read_text(encoding="utf-8")
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    updated = f"{before}{BEGIN}\n{markdown_table()}{END}{after}"
    path.write_text(updated, encoding="utf-8")
    return updated != text
