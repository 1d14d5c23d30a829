"""`python -m pytest_vllm lint TARGET...`: preflight lint from the command line.

Exit status: 0 clean (infos only), 1 errors or warnings found, 2 a target could not be read at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import VllmTestError
from .lint import RULES, ProfileRule, Severity, count, lint_target
from .profile import profile_dirs

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNUSABLE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_vllm lint",
        description="Check vLLM deployment profiles, compose files and env files before anything starts.",
        epilog="Exit status: 0 clean, 1 errors or warnings, 2 unusable input. Rules: --list-rules.")
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="a profile name (profiles/NAME.yml), a profile file, or a plain compose file")
    parser.add_argument("--env-file", type=Path, help="env file, as `docker compose --env-file` takes it "
                        "(replaces the profile's deployment.env_file)")
    parser.add_argument("--gpus", type=int, help="number of GPUs to check capacity against (replaces "
                        "hardware.gpus)")
    parser.add_argument("--gpu-memory", type=gib, metavar="SIZE",
                        help="memory of each GPU, e.g. 24GiB, 24GB, 24 (GiB) (replaces hardware.gpu_memory_gib)")
    parser.add_argument("--rootdir", type=Path, default=Path.cwd(), help="project folder holding profiles/ "
                        "(default: the current folder)")
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
    if not args.targets:
        build_parser().print_usage(sys.stderr)
        print("error: give at least one TARGET (profile name, profile file or compose file)", file=sys.stderr)
        return EXIT_UNUSABLE
    dirs = profile_dirs(args.rootdir)
    hardware = {k: v for k, v in (("gpus", args.gpus), ("gpu_memory_gib", args.gpu_memory)) if v is not None}
    status = EXIT_CLEAN
    for target in args.targets:
        try:
            findings = lint_target(target, dirs, args.env_file, extra_rules, hardware, args.vllm_version)
        except VllmTestError as exc:
            print(f"{target}: cannot lint: {exc}", file=sys.stderr)
            status = EXIT_UNUSABLE
            continue
        shown = [f for f in findings if not (args.quiet and f.severity is Severity.INFO)]
        for finding in shown:
            print(dataclasses.replace(finding, file=_short(finding.file)))
        print(f"{target}: {count(findings)}")
        if any(f.severity is not Severity.INFO for f in findings) and status == EXIT_CLEAN:
            status = EXIT_FINDINGS
    return status


def _short(file: str) -> str:
    """A path relative to the current folder when it is inside it: findings stay one screen wide."""
    try:
        return str(Path(file).relative_to(Path.cwd()))
    except ValueError:
        return file


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
