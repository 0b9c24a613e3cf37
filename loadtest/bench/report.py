"""The benchmark's summary (the README's targets) and its Markdown report. Pure: dicts in, text out.

Results hold the arms under `arms/<KV regime>/<link>/<T>/<arm>` (loadtest/bench/runner.py); the targets
compare, at the headline T, in the bounded regime on the first link (loopback when it ran):

- run time, WebSocket + affinity against HTTP full context + round-robin (what users deploy): ≥ 40% shorter;
- wire upload, WebSocket (deflate offered) against HTTP full context as the SDK sends it: ≥ 97% less;
- capacity at `capacity_tokens`-token histories, turns/s per box core at p99 TTFT within the SLO, WebSocket
  against HTTP full context, each measured to its saturation point: ≥ 10×.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loadtest.bench.stats import mean, ok_turns, percentile, reduction
from loadtest.workload import MODES

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
WS, WS_PLAIN = "ws:affinity", "ws:affinity:plain"
FULL_RR, FULL_AFFINITY, CHAINED = "http_full:round-robin", "http_full:affinity", "http_chained:affinity"
ARM_ORDER = (WS, WS_PLAIN, FULL_RR, FULL_AFFINITY, CHAINED)
GOALS = {"run_time": 0.40, "upload": 0.97, "capacity": 10.0}


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def ordered(names: Sequence[str]) -> list[str]:
    """Arm names in report order: the known arms first, then the rest as given."""
    return [a for a in ARM_ORDER if a in names] + [a for a in names if a not in ARM_ORDER]


def headline_regime(results: Results) -> str | None:
    """The regime the targets read: bounded when it ran, else the first one."""
    regimes = list(results.get("arms") or {})
    return "bounded" if "bounded" in regimes else (regimes[0] if regimes else None)


def first_link(results: Results, regime: str | None) -> str | None:
    """loopback when it ran in `regime`, else its first link."""
    links = list(_get(results, "arms", regime or "") or {})
    return "loopback" if "loopback" in links else (links[0] if links else None)


def steps_at(results: Results, regime: str | None, link: str | None, tool_calls: int) -> dict[str, Any]:
    """arm name -> step at one regime, link and T (empty when it did not run)."""
    if regime is None or link is None:
        return {}
    return dict(_get(results, "arms", regime, link, str(tool_calls)) or {})


def arm_figures(step: Mapping[str, Any]) -> dict[str, Any]:
    """What the report shows of one arm's step: per run, per turn and the workers' cache."""
    c, m, r = step["client"], step["metrics"], step["runs_summary"]
    runs = max(r["runs"] + r["failed_runs"], 1)
    turns = ok_turns(step.get("turns") or [])
    first = [float(t["ttft"]) for t in turns if t["turn"] == 1 and t.get("ttft") is not None]
    later = [float(t["ttft"]) for t in turns if t["turn"] > 1 and t.get("ttft") is not None]
    deflate = step.get("deflate") or {}
    return {
        "runs": r["runs"],
        "failed_runs": r["failed_runs"],
        "errors": c["errors"],
        "run_mean": r["run_mean"],
        "ttft_first_mean": mean(first),
        "ttft_later_p50": percentile(later, 0.5),
        "ttft_later_p99": percentile(later, 0.99),
        "hit_rate": m.get("worker_cache_hit_rate"),
        "prefill_computed_per_run": m["worker_prefill_computed"] / runs,
        "resends": m["box_worker_resends"],
        "up_wire_per_run": c.get("socket_sent", c["up_wire"]) / runs,
        "down_wire_per_run": c.get("socket_received", c["down_wire"]) / runs,
        "up_payload_per_run": c["up_payload"] / runs,
        "down_payload_per_run": c["down_payload"] / runs,
        "box_up_payload_per_run": m["box_up_payload"] / runs,
        "router_up_wire_per_run": m["router_up_wire"] / runs,
        "box_cpu_ms_per_turn": m["box_cpu_seconds"] / c["turns"] * 1000 if c["turns"] else None,
        "deflate_offered": bool(deflate.get("offered")),
        "deflate_negotiated": deflate.get("negotiated", 0),
        "connections": deflate.get("connections", 0),
    }


def summarize(results: Results) -> dict[str, Any]:
    """The figures the benchmark has targets for (the README's table), from one benchmark's results."""
    t = results["meta"]["settings"]["headline_tool_calls"]
    regime = headline_regime(results)
    link = first_link(results, regime)
    summary: dict[str, Any] = {"tool_calls": t, "regime": regime, "link": link, "arms": {}}
    for name, per_link in (results.get("arms") or {}).items():
        for where in per_link:
            steps = steps_at(results, name, where, t)
            summary["arms"].setdefault(name, {})[where] = {
                arm: arm_figures(step) for arm, step in steps.items()
            }
    figures = _get(summary, "arms", regime or "", link or "") or {}
    summary["run_time"] = {
        r: {
            w: {
                "vs_round_robin": _reduction(per_arm, WS, FULL_RR, "run_mean"),
                "vs_affinity": _reduction(per_arm, WS, FULL_AFFINITY, "run_mean"),
            }
            for w, per_arm in per_link.items()
        }
        for r, per_link in summary["arms"].items()
    }
    full = FULL_AFFINITY if FULL_AFFINITY in figures else FULL_RR
    summary["upload"] = {
        "http_arm": full,
        "reduction": _reduction(figures, WS, full, "up_wire_per_run"),
        "reduction_plain": _reduction(figures, WS_PLAIN, full, "up_wire_per_run"),
        "deflate_negotiated": _get(figures, WS, "deflate_negotiated"),
        "connections": _get(figures, WS, "connections"),
    }
    summary["capacity"] = capacity(results)
    summary["agreement"] = agreement_range(results)
    summary["overhead"] = overhead(results)
    return summary


def _reduction(figures: Mapping[str, Any], smaller: str, larger: str, key: str) -> float | None:
    return reduction(_get(figures, smaller, key), _get(figures, larger, key))


def best_step(steps: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The highest-throughput step that met the TTFT SLO."""
    good = [s for s in steps if s.get("slo_met")]
    return max(good, key=lambda s: s["turns_per_second"]) if good else None


def capacity(results: Results) -> dict[str, Any]:
    """Per mode, the best SLO-meeting step and what ended the steps; the WebSocket / HTTP ratios."""
    out: dict[str, Any] = {}
    ends = results.get("capacity_end") or {}
    saturation = results["meta"]["settings"].get("saturation_cores", 0.9)
    for mode, steps in (results.get("capacity") or {}).items():
        best = best_step(steps)
        end = ends.get(mode) or "steps exhausted"
        out[mode] = (
            None
            if best is None
            else {
                "agents": best["agents"],
                "turns_per_second": best["turns_per_second"],
                "box_cores": best["box_cores"],
                "client_cores": best.get("client_cores"),
                "turns_per_box_core_second": best["turns_per_box_core_second"],
                "box_cpu_ms_per_turn": best["box_cpu_ms_per_turn"],
                "ttft_p99": best["client"]["ttft_p99"],
                "ended_by": end,
                "saturated": end != "steps exhausted" or best["box_cores"] >= saturation,
            }
        )
    ws, full = out.get("ws"), out.get("http_full")
    if ws and full:
        out["ratio_per_box_core"] = _div(ws["turns_per_box_core_second"], full["turns_per_box_core_second"])
        out["ratio_turns_per_second"] = _div(ws["turns_per_second"], full["turns_per_second"])
        out["ratio_cpu_per_turn"] = _div(full["box_cpu_ms_per_turn"], ws["box_cpu_ms_per_turn"])
        out["both_saturated"] = bool(ws["saturated"] and full["saturated"])
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def agreement_range(results: Results) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Per regime and link, (min, max) of the metric/client ratios over its arm steps, per figure."""
    out: dict[str, dict[str, tuple[float, float] | None]] = {}
    for regime, per_link in (results.get("arms") or {}).items():
        for link, per_t in per_link.items():
            steps = [s for per_arm in per_t.values() for s in per_arm.values()]
            ranges: dict[str, tuple[float, float] | None] = {}
            for key in ("up_payload", "down_payload", "up_wire", "down_wire", "ttft_mean"):
                values = [s["agreement"][key] for s in steps if s["agreement"].get(key) is not None]
                ranges[key] = (min(values), max(values)) if values else None
            out[f"{regime}, {link}"] = ranges
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


def _met(value: float | None, bound: float) -> str:
    if value is None:
        return "not measured"
    return "yes" if value >= bound else "no"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(*cells: str) -> list[str]:
    return [_row(*cells), "|" + "---|" * len(cells)]


def targets_table(summary: Mapping[str, Any], results: Results) -> list[str]:
    """The benchmark's targets against what was measured."""
    t, regime, link = summary["tool_calls"], summary.get("regime"), summary.get("link")
    settings = results["meta"]["settings"]
    figures = _get(summary, "arms", regime or "", link or "") or {}
    run = _get(summary, "run_time", regime or "", link or "", "vs_round_robin")
    ws, rr = figures.get(WS) or {}, figures.get(FULL_RR) or {}
    up = summary.get("upload") or {}
    negotiated = up.get("deflate_negotiated")
    deflate_note = (
        "deflate negotiated"
        if negotiated
        else "deflate NOT negotiated: uncompressed"
        if negotiated == 0
        else "no WebSocket arm"
    )
    cap = summary.get("capacity") or {}
    ratio = cap.get("ratio_per_box_core")
    saturated = "both to saturation" if cap.get("both_saturated") else "NOT both measured to saturation"
    return [
        *_header("target", "goal", "measured", "met"),
        _row(
            f"run time, T = {t}, {settings['first_turn_tokens']:,}-token first turn, {regime} KV, {link}: "
            "WebSocket + affinity against HTTP full context + round-robin",
            "≥ 40% shorter",
            f"{_pct(run)} shorter ({_num(ws.get('run_mean'), '.1f')} s against "
            f"{_num(rr.get('run_mean'), '.1f')} s; worker cache hits {_pct(ws.get('hit_rate'))} against "
            f"{_pct(rr.get('hit_rate'))})",
            _met(run, GOALS["run_time"]),
        ),
        _row(
            f"wire upload per run, T = {t}: WebSocket ({deflate_note}) against HTTP full context as the SDK "
            "sends it",
            "≥ 97% less",
            f"{_pct(up.get('reduction'))} less ({_num(ws.get('up_wire_per_run'))} against "
            f"{_num(_get(figures, up.get('http_arm') or '', 'up_wire_per_run'))} B)",
            _met(up.get("reduction"), GOALS["upload"]),
        ),
        _row(
            f"capacity, turns/s per box core at p99 TTFT ≤ {settings['slo_ttft_ms']:g} ms, "
            f"{settings['capacity_tokens']:,}-token histories, WebSocket against HTTP full context",
            "≥ 10×, both to saturation",
            f"{_num(ratio, '.1f', '×')} ({saturated})",
            _met(ratio, GOALS["capacity"]) if cap.get("both_saturated") or ratio is None else "not measured",
        ),
    ]


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
        *_clusters_section(meta),
        "## Targets",
        "",
        *targets_table(summary, results),
        "",
        *_arms_tables(summary, results),
        *_compression_section(summary),
        *_sweep_table(results),
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
    return f"box on CPU {pinning['box_cpus']}, router/workers/clients/emulator on CPU {pinning['other_cpus']}"


def _clusters_section(meta: Mapping[str, Any]) -> list[str]:
    clusters = meta.get("clusters") or []
    if not clusters:
        return []
    lines = [
        "## Clusters",
        "",
        *_header("for", "engine", "workers", "worker routing", "KV budget per worker, tokens"),
    ]
    for c in clusters:
        spec = c["spec"]
        engine = spec.get("engine", "sim")
        engine = f"sim, speed {spec['speed']:g}" if engine == "sim" else f"{engine}: {meta.get('model', '?')}"
        budget = f"{c['worker_kv_budget_tokens']:,}"
        lines.append(_row(c["purpose"], engine, str(spec["workers"]), spec["worker_routing"], budget))
    return [*lines, ""]


def _arms_tables(summary: Mapping[str, Any], results: Results) -> list[str]:
    s = results["meta"]["settings"]
    lines: list[str] = []
    for regime, per_link in (summary.get("arms") or {}).items():
        for link, figures in per_link.items():
            lines += [
                f"## Arms, T = {summary['tool_calls']}, {regime} KV, {link} link",
                "",
                f"{s['concurrency']} agents × {s['runs']} runs, {s['first_turn_tokens']:,}-token first turn, "
                f"{s['output_bytes']:,}-byte tool outputs, {s['think_seconds']:g} s think time between "
                "turns.",
                "",
                *_header(
                    "arm",
                    "runs",
                    "run time s",
                    "TTFT turn 1 ms",
                    "TTFT later p50 ms",
                    "TTFT later p99 ms",
                    "worker cache hits",
                    "resends",
                    "prefilled tokens/run",
                    "upload/run B (wire)",
                    "download/run B (wire)",
                    "box CPU ms/turn",
                    "errors",
                ),
            ]
            for arm in ordered(list(figures)):
                f = figures[arm]
                lines.append(
                    _row(
                        arm,
                        f"{f['runs']}" + (f" ({f['failed_runs']} failed)" if f["failed_runs"] else ""),
                        _num(f["run_mean"], ".2f"),
                        _num(_ms(f["ttft_first_mean"]), ".0f"),
                        _num(_ms(f["ttft_later_p50"]), ".0f"),
                        _num(_ms(f["ttft_later_p99"]), ".0f"),
                        _pct(f["hit_rate"]),
                        _num(f["resends"]),
                        _num(f["prefill_computed_per_run"]),
                        _num(f["up_wire_per_run"]),
                        _num(f["down_wire_per_run"]),
                        _num(f["box_cpu_ms_per_turn"], ".2f"),
                        str(f["errors"]),
                    )
                )
            run = _get(summary, "run_time", regime, link) or {}
            lines += [
                "",
                "WebSocket + affinity run time: "
                f"{_pct(run.get('vs_round_robin'))} shorter than HTTP full context + round-robin, "
                f"{_pct(run.get('vs_affinity'))} shorter than HTTP full context + affinity.",
                "",
            ]
    return lines


def _compression_section(summary: Mapping[str, Any]) -> list[str]:
    regime, link = summary.get("regime") or "", summary.get("link") or ""
    figures = _get(summary, "arms", regime, link) or {}
    rows = [a for a in ordered(list(figures)) if a in (WS, WS_PLAIN) or a.startswith("http_full")]
    if WS not in figures:
        return []
    lines = [
        f"## Compression (T = {summary['tool_calls']}, {regime} KV, {link})",
        "",
        "Wire bytes are every byte of the client's TCP sockets; HTTP bodies go uncompressed, as the SDK",
        "sends them. Payload is the JSON before compression.",
        "",
        *_header(
            "arm",
            "deflate negotiated",
            "upload/run wire B",
            "upload/run payload B",
            "download/run wire B",
            "download/run payload B",
            "box CPU ms/turn",
        ),
    ]
    for arm in rows:
        f = figures[arm]
        negotiated = (
            f"{f['deflate_negotiated']}/{f['connections']}" if f["deflate_offered"] else "not offered"
        )
        lines.append(
            _row(
                arm,
                negotiated,
                _num(f["up_wire_per_run"]),
                _num(f["up_payload_per_run"]),
                _num(f["down_wire_per_run"]),
                _num(f["down_payload_per_run"]),
                _num(f["box_cpu_ms_per_turn"], ".2f"),
            )
        )
    up = summary.get("upload") or {}
    lines += [
        "",
        f"WebSocket upload against {up.get('http_arm')}: {_pct(up.get('reduction'))} less with deflate "
        f"offered, {_pct(up.get('reduction_plain'))} less without.",
        "",
    ]
    return lines


def _sweep_table(results: Results) -> list[str]:
    lines: list[str] = []
    for regime, per_link in (results.get("arms") or {}).items():
        for link, per_t in per_link.items():
            if len(per_t) < 2:
                continue
            lines += [f"## Run time against T, {regime} KV, {link}", "", *_header("T", "arm", "run time s")]
            for t, per_arm in sorted(per_t.items(), key=lambda kv: int(kv[0])):
                for arm in ordered(list(per_arm)):
                    lines.append(_row(t, arm, _num(per_arm[arm]["runs_summary"]["run_mean"], ".2f")))
            lines.append("")
    return lines


def _agreement_section(summary: Mapping[str, Any]) -> list[str]:
    names = {
        "up_payload": "upload payload: box tether_box_bytes_total / client",
        "down_payload": "download payload: box / client",
        "up_wire": "upload wire: router tether_router_bytes_total / client sockets",
        "down_wire": "download wire: router / client sockets",
        "ttft_mean": "mean TTFT: box histogram / client (the client's includes the network)",
    }
    lines: list[str] = []
    for where, rng in (summary.get("agreement") or {}).items():
        lines += [
            f"## Client-side against scraped metrics ({where}, every arm)",
            "",
            *_header("figure", "min ratio", "max ratio"),
        ]
        for key, label in names.items():
            pair = rng.get(key)
            lines.append(
                _row(label, _num(pair[0], ".4f") if pair else "–", _num(pair[1], ".4f") if pair else "–")
            )
        lines.append("")
    return lines


def _history_section(results: Results) -> list[str]:
    history = results.get("history") or {}
    if not history:
        return []
    lines = [
        "## Box CPU per turn against history size (one agent, scraped process_cpu_seconds_total)",
        "",
        *_header("history tokens", "mode", "turns/s", "box CPU ms/turn", "TTFT p50 ms", "mean input tokens"),
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
            "load generator cores",
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
                    _num(s.get("client_cores"), ".2f"),
                )
            )
    c = summary.get("capacity") or {}
    ends = results.get("capacity_end") or {}
    lines += [
        "",
        *[f"- {mode}: the steps ended with {end}." for mode, end in ends.items()],
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
            *_header("path", "p50 ms", "p99 ms"),
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
