"""The benchmark's summary (the README's targets) and its Markdown report. Pure: dicts in, text out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loadtest.bench.stats import reduction
from loadtest.workload import MODE_LABELS, MODES

Results = Mapping[str, Any]
PLOTS = (
    ("bytes_per_turn.png", "Upload and download per turn"),
    ("cumulative_upload.png", "Cumulative upload over a run"),
    ("ttft_per_turn.png", "Time to first token per turn"),
    ("run_time_vs_tool_calls.png", "Run time against tool calls"),
    ("box_cpu_vs_history.png", "Box CPU per turn against history size (scraped metrics)"),
    ("capacity.png", "p99 TTFT against throughput at the capacity history size"),
    ("metrics_agreement.png", "Upload bytes: client-side against scraped metrics"),
)


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def upload(results: Results, link: str, tool_calls: int) -> dict[str, Any]:
    """Upload per mode at `tool_calls` on `link`: client wire and payload, box and router metrics."""
    steps = _get(results, "agent", link, str(tool_calls)) or {}
    out: dict[str, Any] = {}
    for mode, step in steps.items():
        runs = max(_get(step, "runs_summary", "runs") or 0, 1)
        out[mode] = {
            "client_wire_per_run": step["client"]["up_wire"] / runs,
            "client_payload_per_run": step["client"]["up_payload"] / runs,
            "box_payload_per_run": step["metrics"]["box_up_payload"] / runs,
            "router_wire_per_run": step["metrics"]["router_up_wire"] / runs,
        }
    return out


def summarize(results: Results) -> dict[str, Any]:
    """The figures the benchmark has targets for (the README's table), from one benchmark's results."""
    settings = results["meta"]["settings"]
    t = settings["headline_tool_calls"]
    summary: dict[str, Any] = {"tool_calls": t}
    link = "loopback" if "loopback" in results["agent"] else next(iter(results["agent"]), None)
    if link is not None:
        up = upload(results, link, t)
        ws, full = up.get("ws"), up.get("http_full")
        if ws and full:
            summary["upload_reduction"] = {key: reduction(ws[key], full[key]) for key in ws if full.get(key)}
            summary["upload_per_run"] = up
    runs = {}
    for name in results["agent"]:
        per_mode = _get(results, "agent", name, str(t)) or {}
        means = {m: _get(s, "runs_summary", "run_mean") for m, s in per_mode.items()}
        runs[name] = {"run_mean": means, "reduction": reduction(means.get("ws"), means.get("http_full"))}
    summary["run_time"] = runs
    summary["capacity"] = capacity(results)
    summary["agreement"] = agreement_range(results)
    summary["overhead"] = overhead(results)
    return summary


def best_step(steps: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The highest-throughput step that met the TTFT SLO."""
    good = [s for s in steps if s.get("slo_met")]
    return max(good, key=lambda s: s["turns_per_second"]) if good else None


def capacity(results: Results) -> dict[str, Any]:
    """Per mode, the best SLO-meeting step; the WebSocket / HTTP full-context ratios."""
    out: dict[str, Any] = {}
    for mode, steps in (results.get("capacity") or {}).items():
        best = best_step(steps)
        out[mode] = (
            None
            if best is None
            else {
                "agents": best["agents"],
                "turns_per_second": best["turns_per_second"],
                "box_cores": best["box_cores"],
                "turns_per_box_core_second": best["turns_per_box_core_second"],
                "box_cpu_ms_per_turn": best["box_cpu_ms_per_turn"],
                "ttft_p99": best["client"]["ttft_p99"],
                "limited_by": "levels exhausted" if best is steps[-1] else "TTFT SLO at the next level",
            }
        )
    ws, full = out.get("ws"), out.get("http_full")
    if ws and full:
        out["ratio_per_box_core"] = _div(ws["turns_per_box_core_second"], full["turns_per_box_core_second"])
        out["ratio_turns_per_second"] = _div(ws["turns_per_second"], full["turns_per_second"])
        out["ratio_cpu_per_turn"] = _div(full["box_cpu_ms_per_turn"], ws["box_cpu_ms_per_turn"])
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def agreement_range(results: Results) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Per link, (min, max) of the metric/client ratios over its agent steps, per figure."""
    out: dict[str, dict[str, tuple[float, float] | None]] = {}
    for link, per_t in (results.get("agent") or {}).items():
        steps = [s for per_mode in per_t.values() for s in per_mode.values()]
        ranges: dict[str, tuple[float, float] | None] = {}
        for key in ("up_payload", "down_payload", "up_wire", "down_wire", "ttft_mean"):
            values = [s["agreement"][key] for s in steps if s["agreement"].get(key) is not None]
            ranges[key] = (min(values), max(values)) if values else None
        out[link] = ranges
    return out


def overhead(results: Results) -> dict[str, Any] | None:
    """Request latency through the emulator at 0 delay and no rate limit, against direct (ms)."""
    data = results.get("overhead")
    if not data:
        return None
    direct = [
        data[k]["p50"] for k in ("direct", "direct_again") if data.get(k) and data[k]["p50"] is not None
    ]
    baseline = sum(direct) / len(direct) if direct else None
    emulated = (data.get("emulated") or {}).get("p50")
    return {
        "direct_p50_ms": _ms(baseline),
        "emulated_p50_ms": _ms(emulated),
        "added_p50_ms": _ms(_sub(emulated, baseline)),
        "emulated_p99_ms": _ms((data.get("emulated") or {}).get("p99")),
        "direct_p99_ms": _ms((data.get("direct") or {}).get("p99")),
    }


def _sub(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None


# --------------------------------------------------------------------------------------------- Markdown
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{unit}"


def targets_table(summary: Mapping[str, Any], results: Results) -> list[str]:
    """The benchmark's targets against what was measured."""
    t = summary["tool_calls"]
    up = _get(summary, "upload_reduction", "client_wire_per_run")
    shaped = _get(summary, "run_time", "shaped", "reduction")
    cap = summary.get("capacity") or {}
    ratio = cap.get("ratio_per_box_core")
    tokens = results["meta"]["settings"]["capacity_tokens"]
    rows = [
        "| target | goal | measured | met |",
        "|---|---|---|---|",
        f"| WebSocket upload vs HTTP full context, T = {t} | ≥ 90% smaller (goal ≥ 95%) | {_pct(up)} smaller "
        f"(wire bytes, client side) | {_met(up, 0.90)} |",
        _row(
            f"WebSocket run time vs HTTP full context, T = {t}, shaped link",
            "≥ 40% shorter",
            f"{_pct(shaped)} shorter",
            _met(shaped, 0.40),
        ),
        f"| capacity, turns/s per box core at p99 TTFT ≤ {results['meta']['settings']['slo_ttft_ms']:g} ms, "
        f"{tokens:,}-token histories, WebSocket vs HTTP full context | goal ≥ 5× | {_num(ratio, '.1f', '×')} "
        f"| {_met(ratio, 5.0)} |",
    ]
    return rows


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(*cells: str) -> list[str]:
    return [_row(*cells), "|" + "---|" * len(cells)]


def _met(value: float | None, bound: float) -> str:
    if value is None:
        return "not measured"
    return "yes" if value >= bound else "no"


def render(results: Results, summary: Mapping[str, Any], plots: Sequence[str]) -> str:
    """The report as Markdown (figures referenced by file name, next to the report)."""
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        "# Tether benchmark",
        "",
        f"Command: `{meta['command']}`  ",
        f"Started {meta['started_utc']}, commit {(meta['git'] or {}).get('commit') or '?'}"
        f"{' (with local changes)' if (meta['git'] or {}).get('dirty') else ''}.  ",
        f"Machine: {m['cpus']} × {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}, Python "
        f"{m['python']}; load average {m['loadavg']} at the start, "
        f"{(meta.get('machine_end') or {}).get('loadavg')} at the end (other work shared these cores).  ",
        f"Pinning: {_pinning(meta.get('pinning') or {})}.",
        "",
        "## Targets",
        "",
        *targets_table(summary, results),
        "",
        *_upload_section(summary),
        *_agent_tables(results),
        *_agreement_section(summary),
        *_history_section(results),
        *_capacity_section(results, summary),
        *_overhead_section(summary, meta),
        "## Figures",
        "",
        *[f"![{title}]({name})" for name, title in PLOTS if name in plots],
        "",
    ]
    skipped = meta.get("skipped") or {}
    if skipped:
        lines += ["## Skipped", "", *[f"- {k}: {v}" for k, v in skipped.items()], ""]
    problems = meta.get("problems") or []
    if problems:
        lines += ["## Problems", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(lines)


def _pinning(pinning: Mapping[str, Any]) -> str:
    if not pinning.get("enabled"):
        return "none"
    return f"box on CPU {pinning['box_cpus']}, router/worker/clients/emulator on CPU {pinning['other_cpus']}"


def _upload_section(summary: Mapping[str, Any]) -> list[str]:
    per_run = summary.get("upload_per_run") or {}
    if not per_run:
        return []
    lines = [
        f"## Upload per agent run (T = {summary['tool_calls']}, loopback)",
        "",
        "| mode | client wire B | router metric B | client payload B | box metric B |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        if mode in per_run:
            u = per_run[mode]
            lines.append(
                _row(
                    MODE_LABELS[mode],
                    _num(u["client_wire_per_run"]),
                    _num(u["router_wire_per_run"]),
                    _num(u["client_payload_per_run"]),
                    _num(u["box_payload_per_run"]),
                )
            )
    red = summary.get("upload_reduction") or {}
    lines += [
        "",
        "WebSocket against HTTP full context: "
        + ", ".join(
            f"{k.replace('_per_run', '').replace('_', ' ')} {_pct(v)} smaller" for k, v in red.items()
        ),
        "",
    ]
    return lines


def _agent_tables(results: Results) -> list[str]:
    lines: list[str] = []
    for link, per_t in (results.get("agent") or {}).items():
        lines += [
            f"## Agent runs, {link} link",
            "",
            *_header(
                "T",
                "mode",
                "runs",
                "run time mean s",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "upload/run B",
                "download/run B",
                "errors",
            ),
        ]
        for t, per_mode in sorted(per_t.items(), key=lambda kv: int(kv[0])):
            for mode in MODES:
                step = per_mode.get(mode)
                if step is None:
                    continue
                c, r = step["client"], step["runs_summary"]
                runs = max(r["runs"], 1)
                lines.append(
                    _row(
                        t,
                        mode,
                        str(r["runs"]),
                        _num(r["run_mean"], ".2f"),
                        _num(_ms(c["ttft_p50"]), ".0f"),
                        _num(_ms(c["ttft_p99"]), ".0f"),
                        _num(c["up_wire"] / runs),
                        _num(c["down_wire"] / runs),
                        str(c["errors"]),
                    )
                )
        lines.append("")
    return lines


def _agreement_section(summary: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for link, rng in (summary.get("agreement") or {}).items():
        lines += _agreement_table(link, rng)
    return lines


def _agreement_table(link: str, rng: Mapping[str, tuple[float, float] | None]) -> list[str]:
    names = {
        "up_payload": "upload payload: box tether_box_bytes_total / client",
        "down_payload": "download payload: box / client",
        "up_wire": "upload wire: router tether_router_bytes_total / client sockets",
        "down_wire": "download wire: router / client sockets",
        "ttft_mean": "mean TTFT: box histogram / client (the client's includes the network)",
    }
    lines = [
        f"## Client-side against scraped metrics ({link} link, every agent step)",
        "",
        "| figure | min ratio | max ratio |",
        "|---|---|---|",
    ]
    for key, label in names.items():
        pair = rng.get(key)
        lines.append(
            f"| {label} | {_num(pair[0], '.4f') if pair else '–'} | {_num(pair[1], '.4f') if pair else '–'} |"
        )
    return [*lines, ""]


def _history_section(results: Results) -> list[str]:
    history = results.get("history") or {}
    if not history:
        return []
    lines = [
        "## Box CPU per turn against history size (one agent, scraped process_cpu_seconds_total)",
        "",
        "| history tokens | mode | turns/s | box CPU ms/turn | TTFT p50 ms | mean input tokens |",
        "|---|---|---|---|---|---|",
    ]
    for tokens, per_mode in sorted(history.items(), key=lambda kv: int(kv[0])):
        for mode in MODES:
            s = per_mode.get(mode)
            if s is not None:
                lines.append(
                    _row(
                        f"{int(tokens):,}",
                        mode,
                        f"{s['turns_per_second']:.1f}",
                        f"{s['box_cpu_ms_per_turn']:.2f}",
                        _num(_ms(s["client"]["ttft_p50"]), ".0f"),
                        _num(s["client"]["input_tokens_mean"]),
                    )
                )
    return [*lines, ""]


def _capacity_section(results: Results, summary: Mapping[str, Any]) -> list[str]:
    cap = results.get("capacity") or {}
    if not cap:
        return []
    tokens = results["meta"]["settings"]["capacity_tokens"]
    lines = [
        f"## Capacity at {tokens:,}-token histories",
        "",
        *_header(
            "mode",
            "agents",
            "turns/s",
            "TTFT p99 ms",
            "box cores",
            "box CPU ms/turn",
            "turns/s per box core",
            "SLO met",
            "worker cores",
            "router cores",
        ),
    ]
    for mode in MODES:
        for s in cap.get(mode) or []:
            lines.append(
                _row(
                    mode,
                    str(s["agents"]),
                    f"{s['turns_per_second']:.1f}",
                    _num(_ms(s["client"]["ttft_p99"]), ".0f"),
                    f"{s['box_cores']:.2f}",
                    f"{s['box_cpu_ms_per_turn']:.2f}",
                    _num(s["turns_per_box_core_second"], ".1f"),
                    "yes" if s["slo_met"] else "no",
                    _num(s.get("worker_cores"), ".2f"),
                    _num(s.get("router_cores"), ".2f"),
                )
            )
    c = summary.get("capacity") or {}
    lines += [
        "",
        "Best SLO-meeting step, WebSocket / HTTP full context: "
        f"{_num(c.get('ratio_per_box_core'), '.1f', '×')} turns/s per box core, "
        f"{_num(c.get('ratio_turns_per_second'), '.1f', '×')} turns/s, "
        f"{_num(c.get('ratio_cpu_per_turn'), '.1f', '×')} less box CPU per turn.",
        "",
    ]
    return lines


def _overhead_section(summary: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    over = summary.get("overhead")
    if over:
        lines += [
            "## Link emulator overhead",
            "",
            "Sequential GET /v1/models through the router: direct on loopback (before and after), and",
            "from the client namespace through the emulator with 0 delay and no rate limit.",
            "",
            "| path | p50 ms | p99 ms |",
            "|---|---|---|",
            _row(
                "direct (mean of two runs)",
                _num(over["direct_p50_ms"], ".2f"),
                _num(over["direct_p99_ms"], ".2f"),
            ),
            _row(
                "namespace + emulator",
                _num(over["emulated_p50_ms"], ".2f"),
                _num(over["emulated_p99_ms"], ".2f"),
            ),
            "",
            f"Added per request (p50): {_num(over['added_p50_ms'], '.2f')} ms.",
            "",
        ]
    for tag, link in (meta.get("links") or {}).items():
        stats = link.get("emulator_stats") or {}
        for direction in ("up", "down"):
            d = stats.get(direction)
            if d:
                lines.append(
                    f"- {tag} link, {direction}: {d['bytes']:,} B in {d['slices']:,} slices; timers fired "
                    f"{d['late_mean'] * 1000:.2f} ms late on average (p99 {d['late_p99'] * 1000:.2f} ms)"
                )
    return [*lines, ""] if lines else []


def format_line(name: str, value: float | None, formatter: Callable[[float | None], str] = _pct) -> str:
    """`name: value` for console summaries."""
    return f"{name}: {formatter(value)}"
