"""Rules on the API key of a compose deployment: is one passed, where from, and is it any good.

The users' history: the key line deleted from the command (`--api-key: expected at least one
argument`), compose run without `--env-file` so `${VLLM_API_KEY_MEDIUM}` was empty, keys shorter than
their own 32-character rule. The key should reach vLLM as the VLLM_API_KEY environment variable,
interpolated from the env file, never written in the compose file or on the command line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .composefile import as_argv
from .findings import RULES, Finding, Severity

if TYPE_CHECKING:
    from .compose_rules import ComposeTarget, Service

API_KEY_MIN_CHARS = 32
# Placeholders whatever their length: what templates and tutorials put where a key goes.
_PLACEHOLDER = re.compile(r"change|replace|your|example|placeholder|xxxx|todo|dummy|<|>|"
                          r"^(empty|none|null|test|token|key|abc123|token-abc123|sk-[.x-]*)$", re.I)
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_MAKE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def environment(data: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:`, list or mapping form, as a mapping."""
    env = data.get("environment") or {}
    if isinstance(env, list):
        return {k: v for k, _, v in (str(e).partition("=") for e in env)}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv_keys(argv: list[str]) -> list[str]:
    """Values of `--api-key X`, `--api-key=X` and `--api_key=X` in an argv."""
    found = []
    for i, token in enumerate(argv):
        name, eq, inline = token.partition("=")
        if name.replace("_", "-") == "--api-key":
            found.append(inline if eq else (argv[i + 1] if i + 1 < len(argv) else ""))
    return found


def key_variables(service: Service) -> set[str]:
    """Variables the raw compose file feeds into VLLM_API_KEY or `--api-key`."""
    raw = environment(service.raw).get("VLLM_API_KEY", "")
    return set(_VARIABLE.findall(" ".join([raw, *argv_keys(as_argv(service.raw.get("command")))])))


def effective_key(service: Service) -> str | None:
    """The key vLLM ends up with, after compose's interpolation (`${VAR:-default}` evaluated)."""
    args = service.engine.args if service.engine else as_argv(service.data.get("command"))
    keys = argv_keys(args)
    if keys:
        return keys[-1]
    env = service.data.get("environment") or {}
    if isinstance(env, dict) and "VLLM_API_KEY" in env:
        return "" if env["VLLM_API_KEY"] is None else str(env["VLLM_API_KEY"])
    return environment(service.data).get("VLLM_API_KEY")


def api_key_findings(service: Service, target: ComposeTarget, env: dict[str, str]) -> tuple[list[Finding], set[str]]:
    """(findings, the variables that hold the key) for the vLLM service."""
    profile = target.profile
    variables = key_variables(service)
    wanted = profile.auth.get("api_key_env") if profile else None
    written = environment(service.raw).get("VLLM_API_KEY", "")
    if written and "$" not in written:
        return [RULES["VC008"](service.at("environment"), service.key("environment.VLLM_API_KEY"), "the API key is "
                               "written in the compose file (and so in git)", "write VLLM_API_KEY: ${VAR:?set VAR "
                               "in the env file} and keep the value in the env file")], variables
    if wanted and wanted not in variables:
        return [RULES["VC007"](service.at("environment"), service.key("environment"), f"the profile keeps the API "
                               f"key in {wanted} but the compose service never passes it to vLLM, which then serves "
                               "without a key", f"add environment: VLLM_API_KEY: ${{{wanted}:?set {wanted}}}")], \
            variables
    if not variables:
        if argv_keys(as_argv(service.raw.get("command"))):
            return [], variables  # a literal key: reported as VC008 with the command
        return [RULES["VC007"](service.at("environment"), service.key("environment"), "no API key is configured: "
                               "the server answers anyone who reaches its port", "add environment: VLLM_API_KEY: "
                               "${VLLM_API_KEY:?set it in the env file} and put a 32+ character key there",
                               severity=Severity.WARNING)], variables
    if profile and (profile.auth.get("generate") or target.api_key):
        checked = {wanted: target.api_key} if target.api_key and wanted else {}
    else:  # what compose hands over: `${VAR:-default}` evaluated
        checked = {" / ".join(sorted(variables)): effective_key(service)}
    if target.env_file_required and target.env_file and not target.env_file.is_file():
        checked = {}  # VP010 already says the env file is missing
    findings = [f for var, value in sorted(checked.items()) for f in _key_value(var, value, service, target)]
    return findings, variables | ({wanted} if wanted else set())


def _key_value(var: str, value: str | None, service: Service, target: ComposeTarget) -> list[Finding]:
    where = str(target.env_file) if target.env_file else service.at("environment")
    if not value:
        state = "is empty" if value == "" else "is not set"
        # a profile's run needs the key (its suites check 401s); a plain file then serves without one
        return [RULES["VC007"](where, var, f"the API key variable {var} {state} (compose run without --env-file, "
                               "or the line is missing): vLLM then answers anyone", f"add {var}=<key from "
                               f"`{_MAKE}`> to {target.env_file or 'an env file'} and pass --env-file to compose",
                               severity=None if target.profile else Severity.WARNING)]
    if _PLACEHOLDER.search(value) or len(set(value)) < 4:
        return [RULES["VC007"](where, var, f"the API key in {var} looks like a placeholder ({value!r})",
                               f"generate one: {_MAKE}", severity=Severity.WARNING)]
    if len(value) < API_KEY_MIN_CHARS:
        return [RULES["VC007"](where, var, f"the API key in {var} has {len(value)} characters; the team's rule is "
                               f"{API_KEY_MIN_CHARS}+", f"generate one: {_MAKE}", severity=Severity.WARNING)]
    return []
