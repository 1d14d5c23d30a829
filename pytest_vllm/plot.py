"""A PNG of TTFT history: per workload, the MISS and HIT medians of each run with their spread, and the
acceleration (MISS/HIT ratio of medians) written above each run. Log scale: MISS and HIT differ ×3-×10.

Bars: interquartile range; whiskers: min-max of the run's rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .samples import Summary

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MAX_RUNS = 30  # the latest runs shown; older ones would make the x labels unreadable
COLORS = {"ttft_miss": "#c0392b", "ttft_hit": "#2471a3"}
LABELS = {"ttft_miss": "MISS (cold prefix)", "ttft_hit": "HIT (cached prefix)"}
OFFSET = {"ttft_miss": -0.06, "ttft_hit": 0.06}  # side by side, so their bars never hide each other


class Run(Protocol):
    saved: str
    run_id: str
    samples: list[float]

    @property
    def number(self) -> str: ...

    @property
    def regressed(self) -> bool: ...


def ttft_history(title: str, stored: Mapping[str, Sequence[Run]], current: Mapping[str, list[float]],
                 current_run_id: str, current_regressed: bool, path: Path) -> Path:
    """Plot `workload/ttft_miss|ttft_hit` measurements: stored runs (oldest first) then this run. Runs that
    failed the regression gate are labelled so; they are not baselines."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    runs = _run_order(stored)[-(MAX_RUNS - 1):]
    columns = [*(run.run_id for run in runs), current_run_id]
    x_labels = [*(f"{run.number} {run.saved[5:16].replace('T', ' ')}\n{run.run_id}" for run in runs),
                f"this run\n{current_run_id}"]
    flags = [*(_regressed(stored, run.run_id) for run in runs), current_regressed]
    x_labels = [label + ("\nREGRESSED" if flag else "") for label, flag in zip(x_labels, flags, strict=True)]
    workloads = list(dict.fromkeys(m.split("/", 1)[0] for m in [*stored, *current]))
    fig, axes = plt.subplots(len(workloads), 1, figsize=(max(7.0, 0.9 * len(columns) + 3), 3.6 * len(workloads)),
                             squeeze=False)
    for ax, workload in zip(axes[:, 0], workloads, strict=True):
        medians: dict[str, dict[int, float]] = {}
        for kind in ("ttft_miss", "ttft_hit"):
            measurement = f"{workload}/{kind}"
            by_run = {r.run_id: r.samples for r in stored.get(measurement, [])}
            if measurement in current:
                by_run[current_run_id] = current[measurement]
            points = {i: Summary.of(by_run[run_id]) for i, run_id in enumerate(columns) if by_run.get(run_id)}
            if not points:
                continue
            medians[kind] = {i: s.median for i, s in points.items()}
            _draw(ax, points, kind)
        _annotate_ratio(ax, medians)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 1.8)  # headroom for the ×N labels above the MISS points
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        ax.yaxis.set_minor_formatter(FuncFormatter(_plain))
        ax.set_title(f"{workload}", loc="left", fontsize=10)
        ax.set_ylabel("TTFT (ms)")
        ax.set_xticks(range(len(columns)), x_labels, fontsize=7)
        ax.set_xlim(-0.5, len(columns) - 0.5)
        ax.grid(True, which="both", axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="center left")
    fig.suptitle(f"TTFT history — {title}\nmedian per run; bar: interquartile range, whiskers: min-max; "
                 "×N: MISS/HIT acceleration", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _run_order(stored: Mapping[str, Sequence[Run]]) -> list[Run]:
    """One entry per stored run (any of its measurements), oldest first."""
    by_id = {r.run_id: r for runs in stored.values() for r in runs}
    return sorted(by_id.values(), key=lambda r: (r.saved, r.run_id))


def _regressed(stored: Mapping[str, Sequence[Run]], run_id: str) -> bool:
    return any(r.regressed for runs in stored.values() for r in runs if r.run_id == run_id)


def _draw(ax: Axes, points: dict[int, Summary], kind: str) -> None:
    shift = OFFSET[kind]
    xs = [i + shift for i in sorted(points)]
    points = {i + shift: s for i, s in points.items()}
    med = [points[i].median * 1000 for i in xs]
    color = COLORS[kind]
    ax.vlines(xs, [points[i].min * 1000 for i in xs], [points[i].max * 1000 for i in xs], color=color, lw=1,
              alpha=0.6)
    ax.vlines(xs, [points[i].q1 * 1000 for i in xs], [points[i].q3 * 1000 for i in xs], color=color, lw=6,
              alpha=0.35)
    ax.plot(xs, med, "o-", color=color, label=LABELS[kind], ms=5)
    for x, y in zip(xs, med, strict=True):
        ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(7, -3), fontsize=7, color=color)


def _annotate_ratio(ax: Axes, medians: dict[str, dict[int, float]]) -> None:
    miss, hit = medians.get("ttft_miss", {}), medians.get("ttft_hit", {})
    for i in sorted(set(miss) & set(hit)):
        ax.annotate(f"×{miss[i] / hit[i]:.1f}", (i, 0.97), xycoords=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=8, fontweight="bold")


def _plain(value: float, _position: int) -> str:
    """Tick labels as plain milliseconds (20, 50, 200), not powers of ten."""
    return f"{value:g}" if str(round(value))[0] in "1235" else ""
