"""GPU memory across the engines of one compose file: each engine's capacity, and engines sharing a GPU.

vLLM claims `gpu-memory-utilization` x the GPU's total memory at start-up and refuses to start when
less than that is free ("Free memory on device ... is less than desired GPU memory utilization").
Two engines on one GPU therefore only both start when their utilisations add up to at most 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .findings import RULES, Finding, Severity
from .model_facts import facts, quantization_in_id

if TYPE_CHECKING:
    from ..capacity import Hardware
    from .compose_rules import Service

DEFAULT_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
Values = Mapping[str, Any]


def shared_gpus(engines: list[tuple[Service, Values]],
                gpus_of: Callable[[Service], set[str] | None]) -> list[Finding]:
    """VG008 for each group of engines that run together on one GPU with utilisations summing above 1.

    `gpus_of` gives a service's GPU ids ({'*'}: all of them). Services in different compose profiles
    never run together (`--profile a` or `--profile b`), services without a profile run with every one.
    """
    findings: list[Finding] = []
    reported: set[frozenset[str]] = set()
    for service, _ in engines:
        gpus = gpus_of(service)
        if not gpus:
            continue
        group = [(other, v) for other, v in engines if _together(service, other) and _overlap(gpus, gpus_of(other))]
        names = frozenset(s.name for s, _ in group)
        total = sum(_utilization(v) for _, v in group)
        if len(group) < 2 or total <= 1.0 + 1e-9 or names in reported:
            continue
        reported.add(names)
        parts = " + ".join(f"{s.name} {_utilization(v):g}" for s, v in group)
        sleeping = [s.name for s, v in group if v.get("enable-sleep-mode") is True]
        opt_in = sorted({p for s, _ in group for p in s.profiles})
        message = (f"{len(group)} engines share GPU(s) {', '.join(sorted(gpus))} with gpu-memory-utilization "
                   f"{parts} = {total:.2f} > 1: the later one finds too little free memory and refuses to start "
                   "('Free memory on device ... is less than desired GPU memory utilization')")
        if opt_in:  # a plain `docker compose up` does not start them all together
            message += f", once profile(s) {', '.join(opt_in)} are enabled"
        if sleeping:
            message += f"; {', '.join(sleeping)} run with --enable-sleep-mode, which can free the memory first"
        findings.append(RULES["VG008"](service.at("command"), service.key("command"), message,
                                       "give each engine its own GPU (device_ids), or lower the utilisations so "
                                       "they add up to 1 or less",
                                       severity=Severity.WARNING if sleeping or opt_in else None))
    return findings


def _together(a: Service, b: Service) -> bool:
    return not a.profiles or not b.profiles or bool(a.profiles & b.profiles)


def _overlap(a: set[str], b: set[str] | None) -> bool:
    return bool(b) and ("*" in a or "*" in b or bool(a & b))


def _utilization(values: Values) -> float:
    try:
        return float(values.get("gpu-memory-utilization") or DEFAULT_UTILIZATION)
    except ValueError:
        return DEFAULT_UTILIZATION


def capacity_findings(service: Service, values: Values, hardware: Hardware) -> Iterable[Finding]:
    """VG001/VG002 (VG003, VG006 as infos) for one engine of a plain compose file on `hardware`."""
    from ..capacity import Request, estimate_findings, resolve

    model = str(values.get("model") or "")
    if not model:
        return []
    flag = values.get("quantization")
    arch = facts(model)
    # the weights are what the checkpoint holds: an FP8 id stays FP8 whatever --quantization says (VP003)
    quant = quantization_in_id(model) or (flag if isinstance(flag, str) else None)
    request = Request(model=model, quantization=quant, flags=dict(values),
                      multimodal=bool(arch and arch.vision_params_b))
    return estimate_findings(resolve(request), hardware, service.at("command"),
                             (service.key("command"), service.key("command"), service.key("command")),
                             "give --max-model-len, and a model id whose size is known (or its config.json in "
                             "the Hugging Face cache)")
