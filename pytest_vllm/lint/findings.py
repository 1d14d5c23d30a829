"""What lint reports: a finding names its rule, file, key, the problem and the fix.

Every rule is listed once in `RULES` (id, severity, title) so the CLI can print the catalogue and the
tests can prove each rule has a bad example that triggers it. Rule ids:
VF* vLLM flags, VP* profile consistency, VC* compose file and env file, VG* GPUs, memory and model facts.

Severity means what happens: error = vLLM or compose would refuse it, or the deployment cannot work
(preflight stops on errors only); warning = it runs, but riskily or against policy; info = advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"  # the deployment will fail, or run in a way the profile does not mean
    WARNING = "warning"  # likely wrong or fragile; exit code 1 as well
    INFO = "info"  # worth knowing; never fails


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    file: str
    key: str
    message: str
    fix: str

    @property
    def blocking(self) -> bool:
        """Errors stop a deployment before `up`; warnings and infos are shown."""
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.severity} {self.rule}: {self.message}\n  fix: {self.fix}"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str

    def __call__(self, file: str, key: str, message: str, fix: str, severity: Severity | None = None) -> Finding:
        return Finding(self.id, severity or self.severity, file, key, message, fix)


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO  # noqa: E741 - table below reads better

RULES: dict[str, Rule] = {r.id: r for r in (
    # vLLM flags, checked against the parser of the vLLM release deployed (flagspec.py, versions.py)
    Rule("VF001", E, "unknown vLLM flag"),
    Rule("VF002", E, "value of a JSON flag is not JSON"),
    Rule("VF003", E, "value outside the flag's choices"),
    Rule("VF004", E, "value of the wrong type (number, on/off flag given a value)"),
    Rule("VF005", E, "flag without its value"),
    Rule("VF006", W, "flag given twice (the last one silently wins)"),
    Rule("VF007", W, "abbreviated flag name"),
    Rule("VF008", E, "value out of range"),
    Rule("VF009", E, "reasoning or tool-call parser vLLM does not have"),
    Rule("VF010", E, "unknown or deprecated quantization method"),
    Rule("VF011", E, "empty --api-key: vLLM then serves without authentication"),
    Rule("VF012", E, "stray argument vLLM cannot place (a '#' comment inside a folded command, a flag with a space)"),
    Rule("VF013", I, "flag deprecated, or removed by a later vLLM release (advice for the upgrade)"),
    # profile consistency
    Rule("VP001", E, "server flag that the profile sets elsewhere"),
    Rule("VP002", E, "capability claimed but not configured"),
    Rule("VP003", E, "quantization contradicts the checkpoint"),
    Rule("VP004", E, "parallelism does not match the GPUs"),
    Rule("VP005", E, "context length inconsistent"),
    Rule("VP006", I, "engine default left implicit (V1 turns it on)"),
    Rule("VP007", E, "duplicate key in a YAML mapping"),
    Rule("VP008", E, "compose service named by the profile not found"),
    Rule("VP009", E, "profile port differs from the port compose publishes"),
    Rule("VP010", E, "env file missing"),
    Rule("VP011", W, "--quantization awq forces the slow AWQ kernel where awq_marlin runs (compute capability >= 8.0)"),
    # compose file and env file
    Rule("VC001", E, "GPU device id empty (an unset variable)"),
    Rule("VC002", E, "GPU reservation sets both count and device_ids"),
    Rule("VC003", E, "GPU reservation without capabilities: [gpu]"),
    Rule("VC004", W, "vLLM service reserves no GPU"),
    Rule("VC005", E, "fewer GPUs reserved than the parallelism needs"),
    Rule("VC006", W, "variable used by the compose file is not set (compose substitutes an empty string)"),
    Rule("VC007", E, "API key missing, empty, short or a placeholder"),
    Rule("VC008", W, "API key written into the compose file or the command line"),
    Rule("VC009", W, "published port does not reach vLLM"),
    Rule("VC010", W, "health check missing or not on /health"),
    Rule("VC011", W, "tensor parallelism without shared memory (ipc: host / shm_size)"),
    Rule("VC012", W, "fixed container_name"),
    Rule("VC013", E, "docker compose rejects the file"),
    Rule("VC014", W, "vLLM image not pinned to a version"),
    Rule("VC015", W, "env file line compose cannot read"),
    Rule("VC016", I, "no vLLM service found in the compose file"),
    Rule("VC017", W, "several GPUs in one device id: works with the NVIDIA runtime hook, fails under CDI"),
    Rule("VC018", E, "required variable not set: compose refuses to start (${VAR:?message})"),
    Rule("VC019", E, "`vllm serve` written in command while the image's entrypoint already runs it"),
    # GPUs, memory and model facts (pytest_vllm.capacity, compose_capacity.py)
    Rule("VG001", E, "model weights do not fit the GPUs"),
    Rule("VG002", E, "no KV-cache room for one request of max_model_len"),
    Rule("VG003", I, "capacity estimate"),
    Rule("VG004", E, "GPUs the profile names are not present"),
    Rule("VG005", W, "GPUs already in use by other processes"),
    Rule("VG006", I, "capacity not checked"),
    Rule("VG007", E, "max-model-len beyond the checkpoint's context without rope scaling"),
    Rule("VG008", E, "engines sharing a GPU whose gpu-memory-utilization sums above 1"),
    Rule("VG009", W, "tool-call parser made for another model family"),
)}


def count(findings: list[Finding]) -> str:
    """'2 errors, 1 warning, 0 infos' for summary lines."""
    parts = []
    for sev in Severity:
        n = sum(f.severity is sev for f in findings)
        parts.append(f"{n} {sev}{'' if n == 1 else 's'}")
    return ", ".join(parts)
