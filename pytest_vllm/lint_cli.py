"""`python -m pytest_vllm lint TARGET...`: preflight lint from the command line.

Exit status: 0 clean, 1 a finding at or above --fail-on (default: error), 2 a target could not be read.
`--format json` prints one JSON document (for CI) instead of the text report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VllmTestError
from .lint import RULES, ProfileRule, Severity, count, lint_compose, lint_target
from .profile import profile_dirs

if TYPE_CHECKING:
    from .capacity import Hardware

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNUSABLE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_vllm lint",
        description="Check vLLM deployment profiles, compose files and env files before anything starts.",
        epilog="Exit status: 0 clean, 1 a finding at or above --fail-on, 2 unusable input. Rules: --list-rules.")
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="a profile name (profiles/NAME.yml), a profile file, or a plain compose file")
    parser.add_argument("-f", "--file", dest="compose_files", action="append", type=Path, metavar="COMPOSE_FILE",
                        help="compose files linted together, merged in order like `docker compose -f a.yml -f "
                        "override.yml` (repeat the option)")
    parser.add_argument("--env-file", type=Path, help="env file, as `docker compose --env-file` takes it "
                        "(replaces the profile's deployment.env_file)")
    parser.add_argument("--gpus", type=int, help="number of GPUs to check capacity against (replaces "
                        "hardware.gpus)")
    parser.add_argument("--gpu-memory", type=gib, metavar="SIZE",
                        help="memory of each GPU, e.g. 24GiB, 24GB, 24 (GiB) (replaces hardware.gpu_memory_gib)")
    parser.add_argument("--rootdir", type=Path, default=Path.cwd(), help="project folder holding profiles/ "
                        "(default: the current folder)")
    parser.add_argument("--fail-on", choices=[s.value for s in Severity], default=Severity.ERROR.value,
                        help="lowest severity that makes the exit status 1 (default: error; preflight blocks on "
                        "errors only)")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="report format (json for CI)")
    parser.add_argument("--vllm-version", metavar="X.Y.Z", help="judge vLLM flags against this release "
                        "(default: the image tag or build context pin, the installed vLLM for the process backend)")
    parser.add_argument("--quiet", "-q", action="store_true", help="hide info findings")
    parser.add_argument("--list-rules", action="store_true", help="print every rule id and exit")
    return parser


def gib(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(GiB|GB|G|MiB|MB|M)?\s*", text, re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a memory size (e.g. 24GiB)")
    number, unit = float(match.group(1)), (match.group(2) or "GiB").lower()
    scale = {"gib": 1.0, "g": 1.0, "gb": 1e9 / 2**30, "mib": 1 / 1024, "m": 1 / 1024, "mb": 1e6 / 2**30}[unit]
    return round(number * scale, 3)


def main(argv: list[str], extra_rules: Sequence[ProfileRule] | None = None) -> int:
    """The command; `extra_rules` defaults to the GPU capacity rules (pytest_vllm.capacity)."""
    args = build_parser().parse_args(argv)
    if extra_rules is None:
        from .capacity import capacity_rule
        extra_rules = [capacity_rule]
    if args.list_rules:
        for rule in RULES.values():
            print(f"{rule.id}  {rule.severity:<7}  {rule.title}")
        return EXIT_CLEAN
    if not args.targets and not args.compose_files:
        build_parser().print_usage(sys.stderr)
        print("error: give at least one TARGET (profile name, profile file or compose file)", file=sys.stderr)
        return EXIT_UNUSABLE
    dirs = profile_dirs(args.rootdir)
    hardware = {k: v for k, v in (("gpus", args.gpus), ("gpu_memory_gib", args.gpu_memory)) if v is not None}
    fail_on = _RANK[Severity(args.fail_on)]
    status = EXIT_CLEAN
    report: list[dict[str, object]] = []
    targets: list[str | list[Path]] = [*args.targets, *([args.compose_files] if args.compose_files else [])]
    for item in targets:
        target = " + ".join(map(str, item)) if isinstance(item, list) else item
        try:
            if isinstance(item, list):
                findings = lint_compose(item, args.env_file, _compose_gpus(args), args.vllm_version)
            else:
                findings = lint_target(item, dirs, args.env_file, extra_rules, hardware, _compose_gpus(args),
                                       args.vllm_version)
        except VllmTestError as exc:
            print(f"{target}: cannot lint: {exc}", file=sys.stderr)
            report.append({"target": target, "unusable": str(exc)})
            status = EXIT_UNUSABLE
            continue
        shown = [dataclasses.replace(f, file=_short(f.file)) for f in findings
                 if not (args.quiet and f.severity is Severity.INFO)]
        if args.format == "json":
            report.append({"target": target, "summary": count(findings),
                           "findings": [dataclasses.asdict(f) for f in shown]})
        else:
            for finding in shown:
                print(finding)
            print(f"{target}: {count(findings)}")
        if any(_RANK[f.severity] <= fail_on for f in findings) and status == EXIT_CLEAN:
            status = EXIT_FINDINGS
    if args.format == "json":
        print(json.dumps({"exit_status": status, "fail_on": args.fail_on, "targets": report}, indent=2))
    return status


_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def _compose_gpus(args: argparse.Namespace) -> Hardware | None:
    """The GPUs a plain compose file is checked against: --gpus/--gpu-memory, else NVML on the GPU host."""
    from .capacity import Hardware, hardware_from_snapshot
    from .telemetry import snapshot
    if args.gpus and args.gpu_memory:
        return Hardware("options", args.gpus, args.gpu_memory)
    return hardware_from_snapshot(snapshot())


def _short(file: str) -> str:
    """A path relative to the current folder when it is inside it: findings stay one screen wide."""
    try:
        return str(Path(file).relative_to(Path.cwd()))
    except ValueError:
        return file


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
