"""Why a deployment failed, read from its exit state and its log, with the fix.

`diagnose(log_text, exit_code, oom_killed, timed_out)` returns a `Diagnosis` (cause id, title, the log
line that proves it, the fix) or None when nothing known matches; `diagnose_failure(error, log_path)`
feeds it a deployment error's log and exit state and puts the answer on the error. The messages matched are vLLM 0.32's
own (argparse errors, config validation, start-up checks), Docker's and compose's, and the older forms
the seeds quote (vLLM 0.11). Each cause has real log excerpts under tests/data/logs/.

Order matters: the root cause is searched before its consequences. vLLM re-raises an engine failure as
"Engine core initialization failed. See root cause above", so the first specific line wins, wherever it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import DeploymentError, HealthTimeout, ServerExited

MAX_EVIDENCE = 400
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# vLLM's log prefix: "INFO 10-16 05:06:04 [file.py:12] ..." (optionally after "(EngineCore pid=1) ")
_STAMP = re.compile(r"\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (\d\d-\d\d \d\d:\d\d:\d\d)")
_LISTEN = re.compile(r"Starting vLLM server on (\S+)")


@dataclass(frozen=True)
class Diagnosis:
    cause: str  # stable id, e.g. "cuda_oom"
    title: str
    evidence: str  # the log line (or exit state) that shows it, quoted
    fix: str

    def render(self) -> str:
        """For DeploymentError(diagnosis=...) and the report: title, evidence, fix on three lines."""
        return f"{self.title} [{self.cause}]\n  evidence: {self.evidence}\n  fix: {self.fix}"


# A deployment whose log we cannot see (an external endpoint): say so instead of reading silence as a cause.
NO_LOG = Diagnosis("no_log", "no cause read from a log: pytest-vllm cannot see this server's log",
                   "external endpoint: the server runs elsewhere",
                   "the cause is in the server's own log where it runs; a profile whose backend pytest-vllm starts "
                   "(process, compose) has its log read and diagnosed here")

Text = str | Callable[[dict[str, str]], str]


@dataclass(frozen=True)
class Cause:
    """One known failure: patterns over single log lines, a title and a fix (templates over named groups)."""

    id: str
    patterns: tuple[re.Pattern[str], ...]
    title: Text
    fix: Text

    def match(self, lines: list[str]) -> Diagnosis | None:
        for line in lines:
            for pattern in self.patterns:
                found = pattern.search(line)
                if found:
                    groups = {k: v or "" for k, v in found.groupdict().items()}
                    return Diagnosis(self.id, _text(self.title, groups), _quote(line), _text(self.fix, groups))
        return None


def _text(template: Text, groups: dict[str, str]) -> str:
    return template(groups) if callable(template) else template.format(**groups)


def _quote(line: str) -> str:
    line = line.strip()
    return line if len(line) <= MAX_EVIDENCE else line[:MAX_EVIDENCE] + " ..."


def _re(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


# Flags vLLM removed, and what replaced them (vLLM 0.32).
RETIRED_FLAGS = {
    "--rope-scaling": "--hf-overrides '{\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4.0, "
                      "\"original_max_position_embeddings\": 32768}}'",
    "--rope-theta": "--hf-overrides '{\"rope_parameters\": {\"rope_theta\": ...}}'",
    "--disable-log-requests": "nothing: requests are not logged by default (--enable-log-requests turns it on)",
}


def _unknown_flag_fix(groups: dict[str, str]) -> str:
    flag = groups["flag"].split("=")[0].replace("_", "-")
    if flag in RETIRED_FLAGS:
        return f"vLLM removed {flag}; use {RETIRED_FLAGS[flag]}"
    return (f"remove {groups['flag']} or correct its spelling against this vLLM version "
            "(`python -m pytest_vllm lint` checks every flag against vLLM's own parser)")


def _json_fix(groups: dict[str, str]) -> str:
    value = groups["value"]
    if "\\\"" in value:
        return (f"the value is not JSON: its quotes are escaped (\\\"). Write {groups['flag']} "
                f"'{value.replace(chr(92) + chr(34), chr(34))}' (YAML list item in single quotes, no backslashes)")
    return (f"give {groups['flag']} a JSON object, e.g. {groups['flag']} '{{\"image\": 3, \"video\": 0}}' "
            "(the key:value,key:value form was retired)")


def _kv_fix(groups: dict[str, str]) -> str:
    if not groups.get("need"):
        return ("the weights alone fill gpu-memory-utilization x GPU memory: use a smaller (4-bit) checkpoint, "
                "more GPUs (tensor-parallel-size), or raise gpu-memory-utilization if nothing else uses the GPU")
    fit = f"lower --max-model-len to {groups['fit']} or less" if groups.get("fit") else "lower --max-model-len"
    return (fit + "; or --kv-cache-dtype fp8 (halves KV memory); or raise --gpu-memory-utilization (the seeds "
            "crashed above 0.90); or more GPUs. `python -m pytest_vllm lint` estimates this before starting")


GPU_VISIBILITY_FIX = ("the container does not see the GPUs. On the host: nvidia-smi; then docker run --rm --gpus "
                      "all <image> nvidia-smi. If that fails install the NVIDIA Container Toolkit. In compose: "
                      "deploy.resources.reservations.devices with driver: nvidia, capabilities: [gpu] and "
                      "device_ids: ['0', '1'] (one string per GPU; ['0,1'] is ONE id that matches no GPU)")

# Searched in this order; the first cause with a matching line wins.
CAUSES: tuple[Cause, ...] = (
    Cause("gpu_runtime_missing", _re(
        r"could not select device driver \"[^\"]*\" with capabilities",
        r"[Uu]nknown runtime specified \w+",
        r"unknown or invalid runtime name: \w+"),
        "Docker cannot give the container a GPU: the NVIDIA container runtime is not installed",
        "install the NVIDIA Container Toolkit on the host, run `nvidia-ctk runtime configure --runtime=docker`, "
        "restart dockerd; check with docker run --rm --gpus all <image> nvidia-smi"),
    Cause("container_name_conflict", _re(
        r"The container name \"/?(?P<name>[^\"]+)\" is already in use"),
        "a container named {name} already exists",
        "remove it (docker rm -f {name}) or, better, drop container_name from the compose file so compose "
        "names containers per project"),
    Cause("port_in_use", _re(
        r"\[Errno 98\] (?:error while attempting to bind on address .*: )?[Aa]ddress already in use",
        r"Bind for \S+ failed: port is already allocated",
        r"address already in use"),
        "the server's port is already taken by another process",
        "stop whatever listens there (ss -ltnp; docker ps) or change deployment.port in the profile "
        "(and the compose port mapping)"),
    Cause("api_key_missing", _re(
        r"argument --api-key: expected (?:at least )?one argument",
        r"required variable (?P<var>\w*(?:API_KEY|_KEY)\w*) is missing a value"),
        lambda g: (f"{g['var']} is not set, so the deployment has no API key" if g.get("var") else
                   "--api-key was given no value: the variable holding the key was empty or the line lost its value"),
        "set the key variable (32+ characters) in the env file and pass it: docker compose --env-file <file> "
        "... up. Read the real log before editing the compose file (the seeds' bug #3 deleted the line)"),
    Cause("invalid_choice", _re(
        r"argument (?P<flag>--[\w-]+): invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>[^)]*)\)"),
        "{flag} {value} is not one of vLLM's choices",
        "use one of: {choices} (e.g. --mm-encoder-tp-mode weights, not replicate)"),
    Cause("bad_json_flag", _re(
        # vLLM 0.32 names the parser (json.loads); the seeds quote the message without it
        r"argument (?P<flag>--[\w-]+): Value (?P<value>.*) cannot be converted(?: to <function loads|\.?\s*$)",
        r"argument (?P<flag>--[\w-]+): Value (?P<value>[{\[].*) cannot be converted"),
        "{flag} is not valid JSON", _json_fix),
    Cause("invalid_argument", _re(
        r"error: unrecognized arguments: (?P<flag>\S+)",
        r"error: argument (?P<flag>--[\w-]+): (?P<why>.+)",
        r"error: the following arguments are required: (?P<flag>.+)"),
        "vLLM rejected the command line: {flag}", _unknown_flag_fix),
    Cause("quantization_mismatch", _re(
        r"Quantization method specified in the model config \((?P<ckpt>[^)]*)\) does not match the "
        r"quantization method specified in the `quantization` argument \((?P<flag>[^)]*)\)",
        r"Cannot find the config file for (?P<flag2>\w+)"),
        lambda g: (f"--quantization {g.get('flag') or g.get('flag2')} contradicts the checkpoint"
                   + (f", which is {g['ckpt']}" if g.get("ckpt") else " (it has no such quantization config)")),
        "remove --quantization: vLLM reads the method from the checkpoint's config.json (the seeds' "
        "Qwen3-VL AWQ checkpoint is compressed-tensors)"),
    Cause("model_not_found_offline", _re(
        r"LocalEntryNotFoundError: ",
        r"outgoing traffic has been disabled",
        r"We couldn't connect to 'https://huggingface\.co'",
        r"Repo id must be in the form 'repo_name' or 'namespace/repo_name': '(?P<path>[^']*)'",
        r"is not a local folder and is not a valid model identifier",
        r"RepositoryNotFoundError: "),
        lambda g: (f"model path {g['path']} does not exist (so vLLM took it for a hub id)" if g.get("path")
                   else "the model is neither on disk nor downloadable (offline, or not in the HF cache)"),
        "check model.path (mounted into the container?), or download the weights once online into the HF cache "
        "the deployment mounts (huggingface-cli download <id>), then keep HF_HUB_OFFLINE=1"),
    Cause("max_model_len_too_large", _re(
        r"User-specified max_model_len \((?P<asked>\d+)\) is greater than the derived max_model_len "
        r"\((?P<derived>[^)]*)\)"),
        "--max-model-len {asked} is beyond what the checkpoint allows ({derived})",
        "lower --max-model-len, or extend the context with YaRN: --hf-overrides '{{\"rope_parameters\": "
        "{{\"rope_type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 32768}}}}'"),
    Cause("gpu_memory_busy", _re(
        r"Free memory on device (?P<device>\S+) \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less "
        r"than desired GPU memory utilization"),
        "{device} has only {free} of {total} GiB free: another process holds the GPU",
        "stop the other deployment (nvidia-smi lists it) or lower --gpu-memory-utilization"),
    Cause("kv_cache_insufficient", _re(
        r"To serve at least one request with the model's max seq len \((?P<len>\d+)\), \((?P<need>[\d.]+) GiB "
        r"KV cache is needed, which is larger than the available KV cache memory \((?P<avail>[\d.]+) GiB\)\."
        r"(?: Based on the available memory, the estimated maximum model length is (?P<fit>\d+)\.)?",
        r"No available memory for the cache blocks"),
        lambda g: (f"a {g['len']}-token request needs {g['need']} GiB of KV cache, only {g['avail']} GiB left"
                   if g.get("need") else "no memory left for the KV cache after loading the weights"),
        _kv_fix),
    Cause("cuda_oom", _re(
        r"CUDA out of memory",
        r"torch\.(?:cuda\.)?OutOfMemoryError",
        r"CUDA error: out of memory"),
        "CUDA out of memory",
        "lower --gpu-memory-utilization (0.85 was the seeds' stable value), keep --enable-chunked-prefill, "
        "lower --max-num-seqs / --max-num-batched-tokens or --max-model-len"),
    Cause("no_gpu", _re(
        r"libcuda\.so(?:\.1)?: cannot open shared object file",
        r"Failed to infer device type",
        r"No platform detected, vLLM is running on UnspecifiedPlatform",
        r"No CUDA GPUs are available",
        r"Found no NVIDIA driver on your system",
        r"NVIDIA driver on your system is too old",
        r"CUDA driver version is insufficient"),
        "vLLM found no usable GPU", GPU_VISIBILITY_FIX),
    # Last: compose only warns about an unset variable; any harder evidence above is the better cause.
    Cause("env_not_loaded", _re(
        r"required variable (?P<var>\w+) is missing a value",
        r"The \\?\"(?P<var2>\w+)\\?\" variable is not set\. Defaulting to a blank string"),
        lambda g: f"compose variable {g.get('var') or g.get('var2')} is not set: the env file was not loaded",
        "pass the env file explicitly: docker compose --env-file <file> -f ... up (compose reads only the .env "
        "next to the first compose file; the seeds' bug #4), and define the variable there"),
)

# Start-up phases, in order, by the log lines that open them (vLLM 0.32 and the seeds' 0.11).
PHASES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("starting", re.compile(r"vLLM API server version|non-default args|api_server\.py.*args:"),
     "the process just started: it may be stuck before the engine (image pull, slow import)"),
    ("engine initialisation", re.compile(r"Initializing an? (?:V1 )?LLM engine"),
     "the engine was starting its workers (distributed init): with TP, check ipc: host / shm_size"),
    ("weights download", re.compile(r"Using model weights format|Fetching \d+ files|Downloading"),
     "weights were downloading: pre-download them into the mounted HF cache, or raise timeouts.health"),
    ("weights loading", re.compile(r"Starting to load model|Loading safetensors checkpoint shards"),
     "weights were loading (~12 s for 18 GiB from a local disk in the seeds); slow disk or a network "
     "volume: copy the weights locally, or raise timeouts.health"),
    ("torch.compile", re.compile(r"Warming up model for the compilation|Dynamo bytecode transform|"
                                 r"Compiling a graph for|Compiling model again|torch\.compile"),
     "torch.compile was running: the first start compiles for minutes; persist ~/.cache/vllm "
     "(torch_compile_cache) in a volume so later starts reuse it, or raise timeouts.health"),
    ("memory profiling", re.compile(r"Memory profiling takes|Available KV cache memory|KV cache size|"
                                    r"# GPU blocks"),
     "the engine was profiling memory / allocating the KV cache"),
    ("CUDA graph capture", re.compile(r"Capturing CUDA graph|Capturing the model for CUDA graphs|"
                                      r"Capturing cudagraphs"),
     "CUDA graphs were being captured (535 s in the seeds' deployment): raise timeouts.health to 900+ s, "
     "or trade decode speed for start time with --enforce-eager"),
    ("API server start", re.compile(r"init engine \(profile, create kv cache, warmup model\) took|"
                                    r"Graph capturing finished"),
     "the engine was ready and the API server was starting"),
    ("serving", re.compile(r"Starting vLLM server on|Application startup complete|Available routes are"),
     ""),
)


def _stamp(line: str) -> datetime | None:
    found = _STAMP.search(line)
    return datetime.strptime(found.group(1), "%m-%d %H:%M:%S") if found else None


def _timeout(lines: list[str]) -> Diagnosis:
    """Which start-up phase the server was in when the health wait gave up, and for how long."""
    reached: dict[int, int] = {}  # phase (its order) -> first line that opened it
    for index, line in enumerate(lines):
        for order, (_, pattern, _) in enumerate(PHASES):
            if order not in reached and pattern.search(line):
                reached[order] = index
    if not reached:
        tail = _quote(lines[-1]) if lines else "(empty log)"
        return Diagnosis("health_timeout_loading", "health timeout before vLLM logged its start-up", tail,
                         "vLLM never got going: check the container/process started at all (image pull, "
                         "entrypoint), then raise timeouts.health")
    index = reached[max(reached)]
    name, _, advice = PHASES[max(reached)]
    if name == "serving":
        listen = next((m.group(1) for m in map(_LISTEN.search, lines) if m), None)
        return Diagnosis(
            "server_unreachable", "vLLM reported it was serving, but the health check never reached it",
            _quote(lines[index]),
            (f"vLLM listens on {listen}; " if listen else "") + "check the address the tests call: published "
            "port (ports: 'HOST:8000'), --host 0.0.0.0 inside a container, firewall (the seeds' section 1.3)")
    since = _stamp(lines[index])
    until = next((s for s in map(_stamp, reversed(lines)) if s), None)
    seconds = int((until - since).total_seconds()) if since and until else 0
    spent = f" for {seconds} s" if seconds > 0 else ""
    return Diagnosis("health_timeout_loading", f"health timeout while still in {name}{spent}",
                     _quote(lines[index]), advice)


def diagnose(log_text: str, exit_code: int | None = None, oom_killed: bool = False,
             timed_out: bool = False) -> Diagnosis | None:
    """The most likely cause of a failed deployment, from its log and exit state; None when unknown."""
    lines = [_ANSI.sub("", line) for line in log_text.splitlines() if line.strip()]
    for cause in CAUSES:
        found = cause.match(lines)
        if found:
            return found
    if oom_killed:
        last = _quote(lines[-1]) if lines else "(no log)"
        return Diagnosis(
            "container_oom_killed", "the kernel's OOM killer stopped the container (host RAM, not GPU memory)",
            f"exit code {exit_code if exit_code is not None else 137}, OOMKilled=true; last log line: {last}",
            "give the container more host RAM (mem_limit / close other programs) or need less: smaller "
            "--swap-space / --cpu-offload-gb, fewer --max-num-seqs; weights are staged in RAM while loading")
    if timed_out:
        return _timeout(lines)
    return None


def diagnose_failure(error: DeploymentError, log_path: Path | None) -> None:
    """Set `error.diagnosis` from the full log (else the tail the error quotes) and the exit state it
    carries. A backend's own hint (e.g. compose's failing healthcheck) stays when they prove nothing.
    No log at all (an external endpoint): say so rather than read silence as a cause."""
    if log_path is None and not error.log_tail:
        error.diagnosis = error.diagnosis or NO_LOG
        return
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path and log_path.is_file() \
        else "\n".join(error.log_tail)
    exit_code, oom_killed = (error.exit_code, error.oom_killed) if isinstance(error, ServerExited) else (None, False)
    error.diagnosis = diagnose(log, exit_code=exit_code, oom_killed=oom_killed,
                               timed_out=isinstance(error, HealthTimeout)) or error.diagnosis
