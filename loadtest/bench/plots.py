"""PNG charts of one benchmark's results (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from loadtest.bench.report import ARM_ORDER, first_link, headline_regime, ordered, steps_at
from loadtest.bench.stats import cumulative, per_turn_index
from loadtest.workload import MODE_LABELS, MODES

COLORS = {"ws": "#1b9e77", "http_full": "#d95f02", "http_chained": "#7570b3"}
ARM_COLORS = dict(zip(ARM_ORDER, ("#1b9e77", "#66c2a5", "#d95f02", "#e6ab02", "#7570b3"), strict=True))
Results = Mapping[str, Any]


def draw_all(results: Results, out: Path) -> list[str]:
    """Write every chart the results allow into `out`; the file names written."""
    drawers: dict[str, Callable[[Results], Figure | None]] = {
        "bytes_per_turn.png": bytes_per_turn,
        "cumulative_upload.png": cumulative_upload,
        "ttft_per_turn.png": ttft_per_turn,
        "run_time_vs_tool_calls.png": run_time_vs_tool_calls,
        "box_cpu_vs_history.png": box_cpu_vs_history,
        "capacity.png": capacity_chart,
        "metrics_agreement.png": metrics_agreement,
    }
    written = []
    for name, draw in drawers.items():
        figure = draw(results)
        if figure is None:
            continue
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(name)
    return written


def _headline(results: Results, regime: str | None = None) -> tuple[str, Mapping[str, Any]]:
    """(where, arm -> step) at the headline T in `regime` (default: the headline regime), first link."""
    regime = regime or headline_regime(results)
    link = first_link(results, regime)
    t = results["meta"]["settings"]["headline_tool_calls"]
    return f"{regime} KV, {link}", steps_at(results, regime, link, t)


def _color(arm: str) -> str:
    return ARM_COLORS.get(arm, "#666666")


def _title(ax: Axes, text: str) -> None:
    ax.set_title(text, fontsize=10)
    ax.grid(True, alpha=0.3)


def _legend(ax: Axes, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)


def _plain_log(ax: Axes) -> None:
    """Log axes labelled 20, 50, 100 rather than 2 x 10^1."""
    for axis in (ax.xaxis, ax.yaxis):
        formatter = ScalarFormatter()
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)
        axis.set_minor_formatter(NullFormatter())


def _integer_turns(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def bytes_per_turn(results: Results) -> Figure | None:
    """Upload (solid) and download (dotted) wire bytes per turn, per arm."""
    where, steps = _headline(results)
    if not steps:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    for arm in ordered(list(steps)):
        turns = steps[arm]["turns"]
        up = per_turn_index(turns, "up_wire")
        down = per_turn_index(turns, "down_wire")
        ax.plot([i for i, _ in up], [v / 1024 for _, v in up], color=_color(arm), label=f"{arm} up")
        ax.plot(
            [i for i, _ in down],
            [v / 1024 for _, v in down],
            color=_color(arm),
            linestyle=":",
            label=f"{arm} down",
        )
    ax.set_xlabel("turn")
    _integer_turns(ax)
    ax.set_ylabel("KiB per turn (wire, client side)")
    ax.set_yscale("log")
    _title(ax, f"Bytes per turn, T = {results['meta']['settings']['headline_tool_calls']}, {where}")
    _legend(ax, 6)
    return figure


def cumulative_upload(results: Results) -> Figure | None:
    """Cumulative upload over a run, per arm."""
    where, steps = _headline(results)
    if not steps:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    for arm in ordered(list(steps)):
        points = cumulative(per_turn_index(steps[arm]["turns"], "up_wire"))
        ax.plot(
            [i for i, _ in points],
            [v / 1024 for _, v in points],
            color=_color(arm),
            label=arm,
            marker=".",
        )
    ax.set_xlabel("turn")
    _integer_turns(ax)
    ax.set_ylabel("KiB uploaded so far (wire)")
    _title(ax, f"Cumulative upload over one agent run, {where}")
    _legend(ax, 7)
    return figure


def ttft_per_turn(results: Results) -> Figure | None:
    """Mean TTFT per turn index, per arm, one panel per KV regime."""
    regimes = [r for r in (results.get("arms") or {}) if _headline(results, r)[1]]
    if not regimes:
        return None
    figure, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4), squeeze=False)
    for ax, regime in zip(axes[0], regimes, strict=True):
        where, steps = _headline(results, regime)
        for arm in ordered(list(steps)):
            points = per_turn_index(steps[arm]["turns"], "ttft")
            ax.plot(
                [i for i, _ in points],
                [v * 1000 for _, v in points],
                color=_color(arm),
                label=arm,
                marker=".",
            )
        ax.set_xlabel("turn")
        _integer_turns(ax)
        ax.set_ylabel("TTFT ms (client side)")
        ax.set_yscale("log")
        _title(ax, f"Time to first token per turn, {where}")
        _legend(ax, 7)
    return figure


def run_time_vs_tool_calls(results: Results) -> Figure | None:
    """Mean run time against T, per arm (solid: the headline regime, dashed: the others)."""
    arms = results.get("arms") or {}
    if not arms:
        return None
    headline = headline_regime(results)
    figure, ax = plt.subplots(figsize=(7, 4))
    for regime, per_link in arms.items():
        link = first_link(results, regime)
        per_t = per_link.get(link or "") or {}
        names = ordered(sorted({a for per_arm in per_t.values() for a in per_arm}))
        for arm in names:
            points = sorted(
                (int(t), s[arm]["runs_summary"]["run_mean"])
                for t, s in per_t.items()
                if arm in s and s[arm]["runs_summary"]["run_mean"] is not None
            )
            if points:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    "-" if regime == headline else "--",
                    color=_color(arm),
                    marker="o",
                    label=f"{arm}, {regime}",
                )
    ax.set_xlabel("tool calls per run (T)")
    _integer_turns(ax)
    ax.set_ylabel("run time, s (mean)")
    _title(ax, "Agent run time against tool calls")
    _legend(ax, 6)
    return figure


def box_cpu_vs_history(results: Results) -> Figure | None:
    """Box CPU ms per turn (from process_cpu_seconds_total) against history size, per mode."""
    history = results.get("history") or {}
    if not history:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    for mode in MODES:
        points = sorted(
            (s[mode]["client"]["input_tokens_mean"] or int(h), s[mode]["box_cpu_ms_per_turn"])
            for h, s in history.items()
            if mode in s and s[mode]["client"]["turns"]
        )
        if points:
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                color=COLORS[mode],
                marker="o",
                label=MODE_LABELS[mode],
            )
    ax.set_xscale("log")
    _plain_log(ax)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("history, input tokens per turn (mean)")
    ax.set_ylabel("box CPU ms per turn (scraped)")
    _title(ax, "API box CPU per turn against history size")
    _legend(ax, 8)
    return figure


def capacity_chart(results: Results) -> Figure | None:
    """p99 TTFT against throughput per capacity step, per mode, with the SLO line."""
    cap = results.get("capacity") or {}
    if not cap:
        return None
    slo = results["meta"]["settings"]["slo_ttft_ms"]
    figure, ax = plt.subplots(figsize=(7, 4))
    for mode in MODES:
        steps = [s for s in cap.get(mode) or [] if s["client"]["ttft_p99"] is not None]
        if steps:
            ax.plot(
                [s["turns_per_second"] for s in steps],
                [s["client"]["ttft_p99"] * 1000 for s in steps],
                color=COLORS[mode], marker="o", label=MODE_LABELS[mode],
            )  # fmt: skip
            for s in steps:
                ax.annotate(
                    str(s["agents"]), (s["turns_per_second"], s["client"]["ttft_p99"] * 1000), fontsize=7
                )
    ax.axhline(slo, color="grey", linestyle="--", linewidth=1, label=f"SLO {slo:g} ms")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("agent turns/s (labels: concurrent agents)")
    ax.set_ylabel("TTFT p99, ms")
    tokens = results["meta"]["settings"]["capacity_tokens"]
    _title(ax, f"Load steps at {tokens:,}-token histories (box pinned to one core)")
    _legend(ax, 7)
    return figure


def metrics_agreement(results: Results) -> Figure | None:
    """Upload per run: client wire vs router metric, client payload vs box metric, per arm."""
    where, steps = _headline(results)
    if not steps:
        return None
    figure, ax = plt.subplots(figsize=(8, 4))
    keys = (
        ("client", "socket_sent", "client wire"),
        ("metrics", "router_up_wire", "router metric"),
        ("client", "up_payload", "client payload"),
        ("metrics", "box_up_payload", "box metric"),
    )
    arms = ordered(list(steps))
    width = 0.8 / len(keys)
    for k, (side, key, label) in enumerate(keys):
        xs = [i + k * width for i in range(len(arms))]
        values = []
        for arm in arms:
            step = steps[arm]
            runs = max(step["runs_summary"]["runs"] + step["runs_summary"]["failed_runs"], 1)
            value = step[side].get(key, step[side].get("up_wire", 0)) or 0
            values.append(value / runs / 1024)
        ax.bar(xs, values, width, label=label)
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(arms))], arms, fontsize=7, rotation=15)
    ax.set_ylabel("KiB uploaded per run")
    ax.set_yscale("log")
    _title(ax, f"Upload per run: client side and scraped /metrics, {where}")
    _legend(ax, 7)
    return figure
