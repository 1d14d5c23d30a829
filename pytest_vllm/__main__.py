"""`python -m pytest_vllm COMMAND`: the tools that are not a test run.

    build-tiny-model   build (or find in the cache) the tiny model of the embedded default
    profiles           list the known profiles with their backend and model
    lint TARGET...     preflight lint of profiles and compose files (see `lint --help`)
    render PROFILE...  dry run: the argv, compose override, env names, defaults and lint verdict (nothing starts)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ProfileError
from .profile import known_profiles, load_profile, profile_dirs


def _profiles(args: argparse.Namespace) -> int:
    dirs = [Path(args.profiles_dir)] if args.profiles_dir else profile_dirs(Path.cwd())
    status = 0
    for name in known_profiles(dirs):
        try:
            p = load_profile(name, dirs)
            print(f"{name:24} {p.backend:9} {p.model.get('path', '-'):40} {p.description}")
        except ProfileError as exc:
            print(f"{name:24} INVALID  {exc}")
            status = 1
    return status


def _build_tiny_model(args: argparse.Namespace) -> int:
    from .tiny_model import ensure_tiny_model
    print(ensure_tiny_model())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "lint":
        from .lint_cli import main as lint_main
        return lint_main(argv[1:])
    if argv and argv[0] == "render":
        from .render import main as render_main
        return render_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m pytest_vllm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build-tiny-model", help="build the tiny CPU model (cached); prints its folder")
    listing = sub.add_parser("profiles", help="list known profiles")
    listing.add_argument("--profiles-dir", default=None, help="default: ./profiles")
    sub.add_parser("lint", help="preflight lint (python -m pytest_vllm lint --help)")
    sub.add_parser("render", help="dry run of profiles or a grid file (python -m pytest_vllm render --help)")
    args = parser.parse_args(argv)
    return {"build-tiny-model": _build_tiny_model, "profiles": _profiles}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
