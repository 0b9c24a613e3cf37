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

from loadtest.bench.report import upload
from loadtest.bench.stats import cumulative, per_turn_index
from loadtest.workload import MODE_LABELS, MODES

COLORS = {"ws": "#1b9e77", "http_full": "#d95f02", "http_chained": "#7570b3"}
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


def _headline(results: Results, link: str) -> Mapping[str, Any]:
    t = str(results["meta"]["settings"]["headline_tool_calls"])
    return ((results.get("agent") or {}).get(link) or {}).get(t) or {}


def _first_link(results: Results) -> str | None:
    agent = results.get("agent") or {}
    return "loopback" if "loopback" in agent else next(iter(agent), None)


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
    """Upload (solid) and download (dotted) wire bytes per turn, per mode."""
    link = _first_link(results)
    steps = _headline(results, link) if link else {}
    if not steps:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    for mode in MODES:
        if mode in steps:
            turns = steps[mode]["turns"]
            up = per_turn_index(turns, "up_wire")
            down = per_turn_index(turns, "down_wire")
            ax.plot(
                [i for i, _ in up],
                [v / 1024 for _, v in up],
                color=COLORS[mode],
                label=f"{MODE_LABELS[mode]} up",
            )
            ax.plot(
                [i for i, _ in down],
                [v / 1024 for _, v in down],
                color=COLORS[mode],
                linestyle=":",
                label=f"{mode} down",
            )
    ax.set_xlabel("turn")
    _integer_turns(ax)
    ax.set_ylabel("KiB per turn (wire, client side)")
    _title(ax, f"Bytes per turn, T = {results['meta']['settings']['headline_tool_calls']}, {link}")
    _legend(ax, 7)
    return figure


def cumulative_upload(results: Results) -> Figure | None:
    """Cumulative upload over a run, per mode."""
    link = _first_link(results)
    steps = _headline(results, link) if link else {}
    if not steps:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    for mode in MODES:
        if mode in steps:
            points = cumulative(per_turn_index(steps[mode]["turns"], "up_wire"))
            ax.plot(
                [i for i, _ in points],
                [v / 1024 for _, v in points],
                color=COLORS[mode],
                label=MODE_LABELS[mode],
                marker=".",
            )
    ax.set_xlabel("turn")
    _integer_turns(ax)
    ax.set_ylabel("KiB uploaded so far (wire)")
    _title(ax, "Cumulative upload over one agent run")
    _legend(ax, 8)
    return figure


def ttft_per_turn(results: Results) -> Figure | None:
    """Mean TTFT per turn index, per mode, one panel per link."""
    links = [link for link in (results.get("agent") or {}) if _headline(results, link)]
    if not links:
        return None
    figure, axes = plt.subplots(1, len(links), figsize=(6 * len(links), 4), squeeze=False)
    for ax, link in zip(axes[0], links, strict=True):
        steps = _headline(results, link)
        for mode in MODES:
            if mode in steps:
                points = per_turn_index(steps[mode]["turns"], "ttft")
                ax.plot(
                    [i for i, _ in points],
                    [v * 1000 for _, v in points],
                    color=COLORS[mode],
                    label=MODE_LABELS[mode],
                    marker=".",
                )
        ax.set_xlabel("turn")
        _integer_turns(ax)
        ax.set_ylabel("TTFT ms (client side)")
        _title(ax, f"Time to first token per turn, {link}")
        _legend(ax, 7)
    return figure


def run_time_vs_tool_calls(results: Results) -> Figure | None:
    """Mean run time against T, per mode (solid: shaped link, dashed: loopback)."""
    agent = results.get("agent") or {}
    if not agent:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    for link, style in (("shaped", "-"), ("loopback", "--")):
        per_t = agent.get(link) or {}
        for mode in MODES:
            points = sorted(
                (int(t), s[mode]["runs_summary"]["run_mean"])
                for t, s in per_t.items()
                if mode in s and s[mode]["runs_summary"]["run_mean"] is not None
            )
            if points:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    color=COLORS[mode],
                    marker="o",
                    label=f"{mode}, {link}",
                )
    ax.set_xlabel("tool calls per run (T)")
    _integer_turns(ax)
    ax.set_ylabel("run time, s (mean)")
    _title(ax, "Agent run time against tool calls")
    _legend(ax, 7)
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
    """Upload per run: client wire vs router metric, client payload vs box metric, per mode."""
    link = _first_link(results)
    if link is None:
        return None
    up = upload(results, link, results["meta"]["settings"]["headline_tool_calls"])
    if not up:
        return None
    figure, ax = plt.subplots(figsize=(7, 4))
    keys = (
        ("client_wire_per_run", "client wire"),
        ("router_wire_per_run", "router metric"),
        ("client_payload_per_run", "client payload"),
        ("box_payload_per_run", "box metric"),
    )
    modes = [m for m in MODES if m in up]
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        xs = [i + k * width for i in range(len(modes))]
        ax.bar(xs, [up[m][key] / 1024 for m in modes], width, label=label)
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(modes))], modes)
    ax.set_ylabel("KiB uploaded per run")
    ax.set_yscale("log")
    _title(ax, "Upload per run: client side and scraped /metrics")
    _legend(ax, 7)
    return figure
