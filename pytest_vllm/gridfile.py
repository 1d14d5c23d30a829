"""A grid file: a YAML that names the profiles of a grid, in order, and the baseline they are compared with.

    baseline: safe_conservative      # optional: deltas are against it; it runs first; its failure aborts
    grid: [chunked_only_safe, safe_conservative, optimized_balanced]

`--profile=profiles/grids/seeds.yml` runs it; `python -m pytest_vllm render profiles/grids/seeds.yml`
prints every profile in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ProfileError


@dataclass(frozen=True)
class GridFile:
    path: Path
    profiles: list[str]
    baseline: str | None


def read_grid_file(path: Path) -> GridFile | None:
    """The grid a YAML file describes, or None when the file is not a grid file (a profile, say)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # not a readable grid file: load_profile reports the problem with file:line
    if not isinstance(data, dict) or "grid" not in data:
        return None
    names = data["grid"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ProfileError("'grid' must be a list of profile names", file=str(path), key="grid",
                           fix="write grid: [name, name, ...]")
    baseline = data.get("baseline")
    if baseline is not None and baseline not in names:
        raise ProfileError(f"baseline '{baseline}' is not in the grid", file=str(path), key="baseline",
                           fix=f"add it to grid:, or name one of: {', '.join(names)}")
    # The baseline runs first: the deltas need it, and when it fails the grid stops before spending hours.
    ordered = [baseline, *(n for n in names if n != baseline)] if baseline else list(names)
    return GridFile(path, ordered, baseline)
