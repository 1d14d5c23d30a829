"""`python -m pytest_vllm render PROFILE|GRIDFILE...`: what a profile would start, without starting anything.

For each profile: the exact vLLM argv, the compose override the plugin would layer last, the names (never
the values) of the environment variables it needs, the engine defaults it relies on because a flag is left
out, and the lint verdict. The seeds' `-DryRun`, but showing what would run rather than simulating it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends.base import RunSettings, server_args
from .backends.compose_config import ServiceSpec, render_override
from .backends.compose_conflicts import PORT_LABEL, PROFILE_LABEL, RUN_LABEL
from .errors import VllmTestError
from .gridfile import read_grid_file
from .lint import Finding, count, lint_profile
from .lint.composefile import interpolate, load_yaml, read_env_file
from .profile import Profile, load_profile, normalize_flag, profile_dirs
from .tiny_model import tiny_model_path

# What vLLM (V1) does when the flag is left out: the deployment relies on it without saying so.
ENGINE_DEFAULTS = {
    "enable-prefix-caching": "ON (vLLM V1 default; leaving the flag out does not turn it off)",
    "enable-chunked-prefill": "ON (vLLM V1 default)",
    "gpu-memory-utilization": "0.9 (vLLM default)",
}
RUN_ID = "<run id>"  # chosen when a run starts


@dataclass(frozen=True)
class Rendering:
    """What one profile would run."""

    profile: Profile
    launcher: str  # what runs the argv
    argv: list[str]
    compose_override: str | None
    env_names: dict[str, str]  # name -> why it is needed
    defaults: dict[str, str]  # flag left out -> the engine's default
    findings: list[Finding]

    @property
    def blocking(self) -> bool:
        return any(f.blocking for f in self.findings)


def render(profile: Profile) -> Rendering:
    """Everything the dry run shows for one profile; reads files, starts nothing, builds nothing."""
    from .capacity import capacity_rule
    findings = lint_profile(profile, extra_rules=[capacity_rule])
    if profile.model.get("path") == "@tiny":  # show where the tiny model lives instead of building it
        profile = dataclasses.replace(profile, model={**profile.model, "path": str(tiny_model_path())})
    env_names = _env_names(profile)
    override = None
    if profile.backend == "compose":
        from .backends.compose import ComposeBackend
        backend = ComposeBackend(profile, RunSettings(reports_dir=Path("reports"), run_id=RUN_ID), None)
        spec, launcher, compose_vars = _static_service(profile)
        for name, why in compose_vars.items():
            env_names[name] = f"{env_names[name]}; {why}" if name in env_names else why
        argv = backend.server_command(spec)
        labels = {PROFILE_LABEL: profile.name, RUN_LABEL: RUN_ID, PORT_LABEL: str(profile.deployment["port"])}
        override = render_override(backend.service, argv, profile.deployment.get("env", {}), labels)
    elif profile.backend == "process":
        argv = server_args(profile, profile.deployment["host"], profile.deployment["port"])
        launcher = "python -m vllm.entrypoints.openai.api_server (process backend)"
    else:
        argv, launcher = [], f"{profile.backend} backend: no vLLM is started by pytest-vllm"
    flags = {normalize_flag(a) for a in argv if a.startswith("--")}
    defaults = {name: meaning for name, meaning in ENGINE_DEFAULTS.items()
                if argv and name not in flags and f"no-{name}" not in flags}
    return Rendering(profile, launcher, argv, override, env_names, defaults, findings)


def _env_names(profile: Profile) -> dict[str, str]:
    names = {profile.auth.get("api_key_env", "VLLM_API_KEY"): "the API key (auth.api_key_env)"}
    for name in profile.deployment.get("env", {}):
        names[name] = "deployment.env (value in the profile)"
    return names


def _static_service(profile: Profile) -> tuple[ServiceSpec, str, dict[str, str]]:
    """The vLLM service as compose would read it, from the files alone (no `docker compose config`):
    network mode, published ports, GPU reservation; what runs the argv; the variables the files use."""
    d = profile.deployment
    files = d["compose_files"] if isinstance(d["compose_files"], list) else [d["compose_files"]]
    service: dict[str, Any] = {}
    for f in files:
        data, _ = load_yaml(profile.relative(f))
        service.update(((data or {}).get("services") or {}).get(d["service"]) or {})
    env_file = profile.relative(d["env_file"]) if d.get("env_file") else None
    env = {**os.environ, **(read_env_file(env_file).values if env_file and env_file.is_file() else {})}
    filled = interpolate(service, env)
    required = {var for var, _, _ in filled.required}
    used = {name: "used by the compose files" + (" (required, not set here)" if name in required else
                                                 "" if name in env else " (not set here: compose's default)")
            for name in filled.used if not name.startswith("PYTEST_VLLM_")}  # ours: set by the plugin
    svc = filled.data
    ports = [_long_port(p) for p in svc.get("ports") or []]
    spec = ServiceSpec.from_config({"services": {d["service"]: {**svc, "ports": [p for p in ports if p]}}},
                                   d["service"], ", ".join(map(str, files)))
    entry = svc.get("entrypoint")
    launcher = f"image {svc.get('image', '?')}, " + (f"entrypoint {entry}" if entry else "its own entrypoint "
                                                     "(vllm/vllm-openai: `vllm serve`)")
    return spec, launcher, used


def _long_port(port: Any) -> dict[str, Any] | None:
    """A compose port in long form ({published, target}); short form "[ip:]host:container[/proto]"."""
    if isinstance(port, dict):
        return port
    parts = str(port).split("/")[0].split(":")
    if len(parts) < 2:
        return None  # a container port only: nothing published on a fixed host port
    return {"published": parts[-2], "target": parts[-1]}


def to_text(r: Rendering) -> str:
    """The dry run of one profile, for a person."""
    p = r.profile
    chain = f"; extends {' -> '.join(p.chain[1:])}" if len(p.chain) > 1 else ""
    lines = [f"# {p.name}  ({p.path}{chain})", f"{p.description}", "",
             f"backend: {p.backend}; runs with: {r.launcher}"]
    if r.argv:
        lines += ["", "vLLM argv:", "  " + " \\\n    ".join(_pairs(r.argv))]
    if r.compose_override:
        lines += ["", "compose override (layered last, after "
                  + ", ".join(Path(f).name for f in _list(p.deployment["compose_files"])) + "):"]
        lines += ["  " + line for line in r.compose_override.rstrip().splitlines()]
    lines += ["", "environment variables needed (names only):"]
    lines += [f"  {name}: {why}" for name, why in sorted(r.env_names.items())]
    if r.defaults:
        lines += ["", "engine defaults relied on (flag left out):"]
        lines += [f"  {name}: {meaning}" for name, meaning in r.defaults.items()]
    verdict = "REFUSED before start" if r.blocking else "would start"
    lines += ["", f"lint: {count(r.findings)} -> {verdict}"]
    lines += ["  " + str(f).replace("\n", "\n  ") for f in r.findings]
    return "\n".join(lines) + "\n"


def _pairs(argv: list[str]) -> list[str]:
    """`--flag value` on one line each, quoted as a shell would need."""
    out: list[str] = []
    for arg in argv:
        if out and not arg.startswith("--") and out[-1].startswith("--") and " " not in out[-1]:
            out[-1] += " " + shlex.quote(arg)
        else:
            out.append(shlex.quote(arg))
    return out


def _list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def targets(names: list[str], dirs: list[Path]) -> list[Profile]:
    """Profiles named on the command line; a grid file stands for every profile in it."""
    profiles: list[Profile] = []
    for name in names:
        grid = read_grid_file(Path(name)) if Path(name).is_file() else None
        for each in grid.profiles if grid else [name]:
            profiles.append(load_profile(each, dirs))
    return profiles


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_vllm render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Exit status: 0 every profile would start, 1 lint would refuse one, "
                                            "2 unusable input.")
    parser.add_argument("targets", nargs="+", metavar="PROFILE|GRIDFILE")
    parser.add_argument("--rootdir", type=Path, default=Path.cwd(), help="project folder holding profiles/")
    args = parser.parse_args(argv)
    try:
        profiles = targets(args.targets, profile_dirs(args.rootdir))
        renderings = [render(p) for p in profiles]
    except VllmTestError as exc:
        print(f"cannot render: {exc}", file=sys.stderr)
        return 2
    print("\n".join(to_text(r) for r in renderings), end="")
    return 1 if any(r.blocking for r in renderings) else 0
