"""How a run's summary reads for a person: summary.md, rendered from the same data as summary.json.

Tables, not dumps: the deployment, the effective engine config next to what the profile asked, one row per
measurement, failures with their diagnosis, then every test. No JSON in the Markdown; durations in words.
"""

from __future__ import annotations

from typing import Any

from .reports import duration

# Engine config keys (start-up log or /metrics) -> the vLLM flag that sets them, and vLLM's default.
ENGINE_ROWS = {
    "enable_prefix_caching": ("prefix caching", "enable-prefix-caching", "ON (vLLM V1 default)"),
    "enable_chunked_prefill": ("chunked prefill", "enable-chunked-prefill", "ON (vLLM V1 default)"),
    "max_seq_len": ("context length (tokens)", "max-model-len", "from the model's config"),
    "tensor_parallel_size": ("tensor parallel size", "tensor-parallel-size", "1"),
    "pipeline_parallel_size": ("pipeline parallel size", "pipeline-parallel-size", "1"),
    "quantization": ("quantization", "quantization", "from the checkpoint"),
    "dtype": ("dtype", "dtype", "auto"),
    "kv_cache_dtype": ("KV cache dtype", "kv-cache-dtype", "auto"),
    "cache_dtype": ("KV cache dtype", "kv-cache-dtype", "auto"),
    "gpu_memory_utilization": ("GPU memory utilization", "gpu-memory-utilization", "0.9"),
    "block_size": ("KV block size", "block-size", "16"),
    "kv_cache_memory_gib": ("KV cache memory per GPU (GiB)", None, ""),
    "enforce_eager": ("eager mode (no CUDA graphs)", "enforce-eager", "off"),
}


def cell(value: Any) -> str:
    """One table cell: booleans as ON/off, lists joined, no braces, no pipes."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "ON" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    return str(value).replace("|", "/").replace("\n", " ")


def _flag(flags: dict[str, Any], name: str | None) -> Any:
    for key, value in flags.items():
        if name and key.lstrip("-").replace("_", "-") == name:
            return value
    return None


def engine_table(engine: dict[str, Any], flags: dict[str, Any]) -> list[str]:
    source = engine.get("source", "nowhere: neither the start-up log nor /metrics said")
    lines = [f"Effective engine config (from {source}):", "", "| setting | effective | the profile asked |",
             "|---|---|---|"]
    for key, (label, flag, default) in ENGINE_ROWS.items():
        if key not in engine:
            continue
        asked = _flag(flags, flag)
        asked_text = f"`{flag}: {cell(asked)}`" if asked is not None else (f"no flag: {default}" if flag else "—")
        effective = cell(engine[key])
        if key == "enable_prefix_caching" and engine[key] and asked is None:
            effective = "**ON** — leaving the flag out does not turn it off"
        elif key == "enable_prefix_caching" and asked is not None and bool(asked) != bool(engine[key]):
            effective = f"**{effective}** — differs from what the profile asked"
        lines.append(f"| {label} | {effective} | {asked_text} |")
    return lines


def _profile_section(name: str, d: dict[str, Any]) -> list[str]:
    timings = d.get("timings") or {}
    rows = [("backend", d.get("backend")), ("endpoint", d.get("endpoint")), ("model", d.get("model")),
            ("vLLM", d.get("vllm_version") or "unknown"),
            ("start → healthy", duration(timings.get("start_to_healthy_s"))),
            ("healthy → ready for tests", duration(timings.get("healthy_to_ready_s"))),
            ("GPU", _gpu(d.get("gpu"))), ("server log", f"`{d['log']}`" if d.get("log") else None)]
    lines = [f"## Profile `{name}`", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {cell(v) if not str(v).startswith('`') else v} |" for k, v in rows if v is not None]
    return [*lines, "", *engine_table(d.get("engine_config") or {}, d.get("server_flags") or {}), ""]


def _gpu(gpu: dict[str, Any] | None) -> str:
    if not gpu:
        return "not sampled"
    if not gpu.get("available"):
        return f"no GPU data ({gpu.get('reason')})"
    return "; ".join(f"GPU{p['index']} {p['name']}: peak {p['memory_used_mib']:,} of {p['memory_total_mib']:,} MiB"
                     for p in gpu.get("peaks", []))


def _ms(summary: dict[str, Any] | None, median: Any = None, iqr: Any = None) -> str:
    if summary:
        median, iqr = summary.get("median"), summary.get("q3", 0) - summary.get("q1", 0)
    return "—" if median is None else f"{median:.1f} (IQR {iqr:.1f})"


def measurements_section(profile: str, items: dict[str, Any]) -> list[str]:
    kv = {k: v for k, v in items.items() if isinstance(v, dict) and "acceleration" in v}
    series = {k: v for k, v in items.items() if isinstance(v, dict) and "rounds_ms" in v}
    other = {k: v for k, v in items.items() if k not in kv and k not in series}
    lines = [f"## Measurements `{profile}`", ""]
    if kv:
        lines += ["| KV-cache workload | TTFT MISS ms | TTFT HIT ms | acceleration (interval) | HIT tokens from cache "
                  "(/metrics) | prompt tokens | prefix caching |", "|---|---|---|---|---|---|---|"]
        for key, m in kv.items():
            low, high = m.get("interval") or (None, None)
            interval = f" ({low:.2f}–{high:.2f}, {m.get('confidence', 0.95):.0%})" if low is not None else ""
            metrics = (m.get("hit") or {}).get("metrics") or {}
            rate = metrics.get("hit_rate")
            counted = (f"{metrics['prefix_cache_hits']:,} of {metrics['prefix_cache_queries']:,}"
                       if "prefix_cache_queries" in metrics else None)
            hits = (f"{rate:.0%} ({counted})" if rate is not None else f"— ({counted} queried)" if counted
                    else "no counters")
            caching = m.get("prefix_caching") or {}
            lines.append(f"| {m.get('workload', key)} | {_ms(None, m['miss_ms_median'], m['miss_ms_iqr'])} | "
                         f"{_ms(None, m['hit_ms_median'], m['hit_ms_iqr'])} | ×{m['acceleration']:.2f}{interval} | "
                         f"{hits} | {cell((m.get('hit') or {}).get('prompt_tokens_median'))} | "
                         f"{cell(caching.get('effective', '?')).upper()} — {cell(caching.get('evidence'))} |")
        lines.append("")
    if series:
        lines += ["| TTFT series | rounds | median ms (IQR) | min–max ms | server mean ms | regression vs history |",
                  "|---|---|---|---|---|---|"]
        for key, s in series.items():
            t = s.get("ttft_ms") or {}
            reg = s.get("regression") or {}
            lines.append(f"| {key} | {t.get('n', len(s['rounds_ms']))} | {_ms(t)} | "
                         f"{cell(t.get('min'))}–{cell(t.get('max'))} | {cell(s.get('server_ttft_mean_ms'))} | "
                         f"{cell(reg.get('status'))}: {cell(reg.get('message'))} |")
        lines.append("")
    if other:
        lines += ["| measurement | figure | value |", "|---|---|---|"]
        for key, value in other.items():
            flat = _flatten(value) if isinstance(value, dict) else {"": value}
            lines += [f"| {key} | {k or '—'} | {cell(v)} |" for k, v in flat.items()]
        lines.append("")
    return lines


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def failures_section(data: dict[str, Any]) -> list[str]:
    failed = [r for r in data["results"] if r["outcome"] in ("failed", "error")]
    if not failed and not data["deploy_failures"]:
        return []
    lines = ["## Failures", ""]
    for name, message in data["deploy_failures"].items():
        lines += [f"### Deployment of `{name}` failed", "", "```text", message[:4000].rstrip(), "```", ""]
    for r in failed:
        message = (r["message"] or "(no message)")[:3000].rstrip()
        lines += [f"### `{r['nodeid']}` — {r['outcome']}", "", "```text", message, "```", ""]
    return lines


def render_summary(data: dict[str, Any]) -> str:
    """summary.md from summary.json's data."""
    counts = ", ".join(f"{n} {k}" for k, n in sorted(data["counts"].items())) or "no tests"
    lines = [f"# pytest-vllm run {data['started']}", "", f"**Result: {counts} in {duration(data['duration_s'])}**", ""]
    for name, d in data["profiles"].items():
        lines += _profile_section(name, d)
    for profile, items in data["measurements"].items():
        lines += measurements_section(profile, items)
    lines += failures_section(data)
    if data["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in data["warnings"]], ""]
    lines += ["## Tests", "", "| test | profile | outcome | time | message |", "|---|---|---|---|---|"]
    for r in data["results"]:
        message = r["message"].splitlines()[0][:160] if r["message"] else ""
        lines.append(f"| `{r['nodeid']}` | {r['profile'] or ''} | {r['outcome']} | {duration(r['duration_s'])} | "
                     f"{cell(message)} |")
    return "\n".join(lines) + "\n"
