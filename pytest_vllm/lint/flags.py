"""Rules on vLLM command-line flags, whether they come from a profile's `server:` or a compose `command:`.

Both are turned into argv tokens first (a profile through `render_flags`, exactly what will run), then
read the way vLLM's FlexibleArgumentParser reads them, and each use is checked against the flag table of
the vLLM release the deployment runs (flagspec.py; the release is chosen by versions.py). Every finding
names that release.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from .findings import RULES, Finding, Severity
from .flagspec import FlagSpec, Lookup, added_in, removed_after, version_key
from .versions import VersionChoice, choose

# Flags that later vLLM releases removed, with what replaced them (each checked against the tables).
RETIRED = {
    "rope-scaling": 'write it inside hf-overrides: {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, '
                    '"original_max_position_embeddings": 32768, "rope_theta": 1000000}} (vLLM docs, '
                    '"Context Extension")',
    "rope-theta": 'put rope_theta inside hf-overrides: {"rope_parameters": {...}}',
    "task": "use --runner pooling and --convert embed|classify|reward for non-generative models",
    "enable-reasoning": "delete it: --reasoning-parser alone turns reasoning output on",
    "guided-decoding-backend": 'write structured-outputs-config: {"backend": "xgrammar"}',
    "disable-log-requests": "delete it: requests are not logged by default (--enable-log-requests logs them)",
    "swap-space": "delete it (it went with the V0 engine)",
    "use-v2-block-manager": "delete it (it went with the V0 engine)",
    "num-scheduler-steps": "delete it (it went with the V0 engine)",
    "max-seq-len-to-capture": "set CUDA graph sizes with max-cudagraph-capture-size",
    "preemption-mode": "delete it (it went with the V0 engine)",
    "device": "delete it: vLLM detects the platform itself",
}
# JSON flags whose value must be an object (vLLM config dataclasses and keyword mappings).
_OBJECT_SUFFIXES = ("-config", "-kwargs")
_OBJECT_FLAGS = {"limit-mm-per-prompt", "hf-overrides", "override-generation-config"}
_RANGES: dict[str, tuple[float, float, bool]] = {  # name: (low, high, low exclusive)
    "gpu-memory-utilization": (0.0, 1.0, True),
    "tensor-parallel-size": (1, 1024, False),
    "pipeline-parallel-size": (1, 1024, False),
    "data-parallel-size": (1, 1024, False),
    "max-num-seqs": (1, 1 << 20, False),
    "port": (1, 65535, False),
}
_REPEATABLE = {"middleware"}  # argparse "append" flags: each use adds
_SIZE = re.compile(r"\d+(\.\d+)?[kmgtKMGT]?")
_RETIRED_MM_FORM = re.compile(r"^\s*\w+\s*[:=]\s*\d+(\s*,\s*\w+\s*[:=]\s*\d+)*\s*$")
_KVS = re.compile(r"[^,=]+=[^,=]+(,[^,=]+=[^,=]+)*")  # vLLM <= 0.8's nullable_kvs: image=3,video=0


@dataclass
class FlagUse:
    """One flag as written, with the tokens argparse would hand it."""

    written: str
    key: str  # where, for the finding: "server.gpu-memory-utilization", "services.x.command[4]"
    found: Lookup  # what the written name is in the release judged against
    values: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)  # tokens after an on/off flag: not its value
    inline: bool = False  # --flag=value


def split_argv(argv: list[str], key_of: Callable[[int], str],
               version: VersionChoice | None = None) -> tuple[str | None, list[FlagUse]]:
    """argv (without the program) -> (positional model tag, flag uses), the way argparse groups them.

    `version`: the release whose parser reads it (default: the newest table, not exact).
    """
    table = (version or choose()).table
    positional: str | None = None
    uses: list[FlagUse] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not _is_flag(token):
            if uses and not uses[-1].found.spec and not uses[-1].values:
                uses[-1].values.append(token)  # unknown flag: assume it took this value
            elif uses and uses[-1].found.spec and not uses[-1].found.spec.takes_value:
                uses[-1].stray.append(token)
            elif positional is None:
                positional = token
            elif uses:
                uses[-1].stray.append(token)
            i += 1
            continue
        name, eq, value = token.partition("=")
        use = FlagUse(name, key_of(i), table.lookup(name), inline=bool(eq))
        uses.append(use)
        i += 1
        if eq:
            use.values.append(value)
            continue
        spec = use.found.spec
        if spec is None or not spec.takes_value:
            continue
        wanted = 1 if spec.nargs in (None, "?") else len(argv)
        if "." in name:
            wanted = 1  # --json-flag.key value
        while wanted and i < len(argv) and not _is_flag(argv[i]):
            use.values.append(argv[i])
            i += 1
            wanted -= 1
    return positional, uses


def _is_flag(token: str) -> bool:
    """A flag, not a negative number given as a value (-1 for max-model-len)."""
    return token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d+(\.\d+)?", token)


def check_flags(uses: list[FlagUse], file: str, *, in_profile: bool,
                version: VersionChoice | None = None) -> list[Finding]:
    """Every rule on flag names and values; `in_profile` only words the fixes for YAML or argv.

    `version` must be the one `split_argv` read the uses with (default: the newest table, not exact).
    """
    version = version or choose()
    findings: list[Finding] = []
    seen: dict[str, FlagUse] = {}
    names = {u.found.spec.name for u in uses if u.found.spec}
    for use in uses:
        found = use.found
        if found.spec is None:
            findings.append(_unknown(use, found, file, in_profile, version))
            continue
        spec = found.spec
        gone = removed_after(spec.name, version.version)
        if gone:
            findings.append(RULES["VF013"](
                file, use.key, f"--{spec.name} works in {version.describe()} but vLLM {gone} removed it",
                f"when you upgrade: {RETIRED.get(spec.name, 'delete it, or use what its release notes name')}"))
        elif spec.deprecated:
            findings.append(RULES["VF013"](file, use.key, f"--{spec.name} is deprecated in {version.describe()}",
                                           "see `vllm serve --help=all` for what replaces it"))
        if found.abbreviation_of:
            findings.append(RULES["VF007"](
                file, use.key, f"'{use.written}' is accepted by argparse as an abbreviation of "
                f"--{found.abbreviation_of}, until vLLM adds another flag with that prefix",
                f"write the full name --{found.abbreviation_of}"))
        if "." not in use.written:
            if spec.name in seen and spec.name not in _REPEATABLE:
                first = seen[spec.name]
                findings.append(RULES["VF006"](
                    file, use.key, f"--{spec.name} is given twice ({first.key} and {use.key}); "
                    "vLLM keeps the last one", "keep one of them"))
            seen.setdefault(spec.name, use)
        findings += _check_values(use, spec, found.negated, file, in_profile, names, version)
    said = version.describe()
    return [f if said in f.message else replace(f, message=f"{f.message} [judged against {said}]")
            for f in findings]


def _unknown(use: FlagUse, found: Lookup, file: str, in_profile: bool, version: VersionChoice) -> Finding:
    """Not a flag of the release: an error when the release is known, a warning when it was guessed."""
    name = use.written.lstrip("-").replace("_", "-").partition(".")[0]
    said = version.describe()
    severity = None if version.exact else Severity.WARNING
    base = name.removeprefix("no-")
    if base != name and base in version.table:
        fix = (f"set {base} to the value you want (false cannot be spelled --no-{base})"
               if in_profile else f"pass --{base} VALUE")
        return RULES["VF001"](file, use.key, f"--{base} is not an on/off flag in {said}, so --no-{base} does "
                              "not exist", fix, severity)
    if found.candidates and len(name) > 2 and all(c.startswith(name) for c in found.candidates):
        return RULES["VF001"](file, use.key, f"'{use.written}' is ambiguous in {said}: it abbreviates "
                              f"{', '.join('--' + c for c in found.candidates)}", "write the full flag name", severity)
    problem = f"--{name} is not a flag of {said}; the server would exit with 'unrecognized arguments'"
    first = added_in(name)
    if first is None:
        hint = f"did you mean {', '.join('--' + c for c in found.candidates)}? " if found.candidates else ""
        return RULES["VF001"](file, use.key, problem, f"{hint}see `vllm serve --help=all`, or remove it", severity)
    if version_key(first) > version_key(version.version):
        return RULES["VF001"](file, use.key, f"{problem} (it came with vLLM {first})",
                              f"upgrade vLLM to {first} or later, or remove it", severity)
    gone = removed_after(name, first)
    return RULES["VF001"](file, use.key, f"{problem} (vLLM {gone} removed it)",
                          RETIRED.get(name, "remove it, or use what that release's notes name instead"), severity)


def _check_values(use: FlagUse, spec: FlagSpec, negated: bool, file: str, in_profile: bool,
                  names: set[str], version: VersionChoice) -> Iterable[Finding]:
    flag = f"--{spec.name}"
    if not spec.takes_value:
        if use.stray or use.inline:
            value = use.stray[0] if use.stray else use.values[0]
            spelled = f"{spec.name}: true (or false)" if in_profile else f"{flag} alone, or --no-{spec.name}"
            yield RULES["VF004"](file, use.key, f"{flag} is an on/off flag and takes no value; '{value}' "
                                 "becomes a stray argument (the model name, or 'unrecognized arguments')",
                                 f"write {spelled}")
        return
    if not use.values and spec.nargs not in ("?", "*"):
        if in_profile:
            fix = f"give {spec.name} a value (true renders the flag alone)"
        elif spec.name == "api-key":
            fix = "set the key variable; better, pass the key as VLLM_API_KEY in the environment"
        else:
            fix = f"give {flag} its value"
        yield RULES["VF005"](file, use.key, f"{flag} got no value (vLLM exits: 'expected one argument'); in a "
                             "string command an empty ${VAR} simply disappears", fix)
        return
    if negated:
        return
    for value in use.values:
        yield from _check_value(use, spec, value, file, in_profile, names, version)


def _check_value(use: FlagUse, spec: FlagSpec, value: str, file: str, in_profile: bool,
                 names: set[str], version: VersionChoice) -> Iterable[Finding]:
    flag, name = f"--{spec.name}", spec.name
    if "." in use.written:
        return  # --json-flag.key value: vLLM parses the value leniently
    if name == "api-key" and not value.strip():
        yield RULES["VF011"](file, use.key, "--api-key is empty (an unset ${VAR}?); vLLM drops empty keys and "
                             "then answers every request without asking for a key",
                             "set the key variable (32+ characters), or pass the key through the "
                             "VLLM_API_KEY environment variable instead of the command line")
        return
    kind = spec.kind
    if kind == "json" or (kind == "json-or-str" and re.match(r"(?s)^\s*\{.*\}\s*$", value)):
        yield from _check_json(use, spec, value, file, in_profile)
    elif kind == "kvs" and not _KVS.fullmatch(value):
        yield RULES["VF002"](file, use.key, f"{flag} '{value}' is not in the KEY=VALUE,KEY=VALUE form this "
                             "release takes; vLLM exits with 'Each item should be in the form KEY=VALUE'",
                             f"write {_as_kvs(value, in_profile)}" if _RETIRED_MM_FORM.match(value)
                             else f"write {flag} as image=N,video=N")
    elif kind in ("int", "float", "size", "size-or-auto") and not _number_ok(kind, value):
        what = {"int": "an integer", "float": "a number", "size": "an integer (1k, 32K allowed)",
                "size-or-auto": "an integer (1k, 32K allowed) or auto"}[kind]
        yield RULES["VF004"](file, use.key, f"{flag} takes {what}, got '{value}'", f"give {flag} {what}")
        return
    if spec.choices is not None and value not in spec.choices:
        yield RULES["VF003"](file, use.key, f"'{value}' is not a valid choice for {flag}",
                             f"use one of: {', '.join(spec.choices)}")
    if name in _RANGES and _number_ok("float", value):
        low, high, exclusive = _RANGES[name]
        number = float(value)
        if number > high or number < low or (exclusive and number == low):
            bracket = "(" if exclusive else "["
            yield RULES["VF008"](file, use.key, f"{flag} {value} is outside {bracket}{low:g}, {high:g}]",
                                 "gpu-memory-utilization is a fraction (0.85 = 85%)"
                                 if name == "gpu-memory-utilization" else f"give {flag} a value in range")
    table, said = version.table, version.describe()
    parsers = {"reasoning-parser": (table.reasoning_parsers, "reasoning-parser-plugin"),
               "tool-call-parser": (table.tool_parsers, "tool-parser-plugin")}
    if name in parsers and parsers[name][0] and value not in parsers[name][0] and parsers[name][1] not in names:
        known, plugin = parsers[name]
        yield RULES["VF009"](file, use.key, f"{said} has no {name.split('-')[0]} parser '{value}'",
                             f"use one of: {', '.join(known or ())} (or load yours with --{plugin})")
    if name == "quantization" and table.quantization:
        if value not in table.quantization:
            yield RULES["VF010"](file, use.key, f"'{value}' is not a quantization method of {said}",
                                 f"use one of: {', '.join(table.quantization)}, or drop the flag "
                                 "and let vLLM read it from the checkpoint")
        elif value in table.deprecated_quantization and "allow-deprecated-quantization" not in names:
            yield RULES["VF010"](file, use.key, f"quantization '{value}' is deprecated; vLLM refuses to start "
                                 "without --allow-deprecated-quantization",
                                 "use a maintained method, or add allow-deprecated-quantization")


def _check_json(use: FlagUse, spec: FlagSpec, value: str, file: str, in_profile: bool) -> Iterable[Finding]:
    flag = f"--{spec.name}"
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        example: str | None = None
        if '\\"' in value:
            problem = "has escaped quotes (\\\") left over from shell or PowerShell quoting"
            example = value.replace('\\"', '"')
        elif spec.name == "limit-mm-per-prompt" and _RETIRED_MM_FORM.match(value):
            problem = "uses the retired modality:count form; vLLM now takes JSON"
            example = _as_json_mapping(value, in_profile)
        else:
            problem = f"is not JSON ({exc.msg} at character {exc.pos})"
        yield RULES["VF002"](file, use.key, f"{flag} '{value}': the value {problem}; vLLM exits with "
                             "'cannot be converted'", _json_fix(spec.name, example, in_profile))
        return
    needs_object = spec.name in _OBJECT_FLAGS or spec.name.endswith(_OBJECT_SUFFIXES)
    if needs_object and not isinstance(parsed, dict):
        yield RULES["VF002"](file, use.key, f"{flag} takes a JSON object, got {type(parsed).__name__} {value!r}",
                             _json_fix(spec.name, None, in_profile))
    elif spec.name == "limit-mm-per-prompt" and isinstance(parsed, dict):
        for modality, limit in parsed.items():
            if not isinstance(limit, int | dict) or isinstance(limit, bool):
                yield RULES["VF002"](file, use.key, f"{flag}: the limit for '{modality}' must be a count "
                                     f"(or an object), got {limit!r}",
                                     _json_fix(spec.name, None, in_profile))


def _json_fix(name: str, example: str | None, in_profile: bool) -> str:
    if in_profile:
        return f"write {name} as a YAML mapping, not a string" + (f": {name}: {example}" if example else "")
    return "write plain JSON (double quotes, no backslashes) as one list item of the command" + (
        f": '{example}'" if example else "")


def _as_kvs(value: str, in_profile: bool) -> str:
    text = ",".join("=".join(re.split(r"\s*[:=]\s*", p.strip())) for p in value.split(","))
    return text if in_profile else f"'{text}'"


def _as_json_mapping(value: str, in_profile: bool) -> str:
    pairs = [re.split(r"\s*[:=]\s*", p.strip()) for p in value.split(",")]
    if in_profile:
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return json.dumps({k: int(v) for k, v in pairs})


def _number_ok(kind: str, value: str) -> bool:
    text = value.strip()
    if kind == "size-or-auto" and (text == "-1" or text.lower() == "auto"):
        return True
    if kind in ("size", "size-or-auto"):
        match = _SIZE.fullmatch(text)
        return bool(match) and not (match.group(1) and text[-1] in "KMGT")  # no 1.5K (binary + decimal)
    try:
        int(text) if kind == "int" else float(text)
    except ValueError:
        return False
    return True

