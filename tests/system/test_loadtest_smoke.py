"""CI smoke of the load tests against the shared real cluster: a short headless Locust run and
`tether bench --smoke`, each as its own process (tests never import Locust: it monkey-patches gevent).
Both are bounded (a handful of users, seconds of load) so that neither can rot unnoticed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench.netns import PREFIX, namespaces, unavailable
from tether.supervisor import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 60  # seconds per smoke run


def _run(argv: list[str], cwd: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
    env.pop("TETHER_LOAD_API_KEY", None)
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUDGET,
        check=False,
    )


def _locust(cluster: LocalCluster, *args: str) -> list[str]:
    """A headless, summary-only Locust run of loadtest/locustfile.py against the cluster's router."""
    assert cluster.router_url is not None
    locustfile = str(ROOT / "loadtest" / "locustfile.py")
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        locustfile,
        "--headless",
        "--only-summary",
        "--host",
        cluster.router_url,
        *args,
    ]


def test_locust_distributed_headless_runs_all_three_agents_and_writes_csv(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    argv = _locust(
        cluster, "-u", "3", "-r", "3", "-t", "6s", "--csv", str(tmp_path / "smoke"), "--tool-calls", "2",
        "--tool-output-bytes", "512", "--max-p95-ttft-ms", "5000",
        "--processes", "2",  # distributed mode: a master and two workers, stats aggregated on the master
    )  # fmt: skip
    result = _run(argv, ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "smoke_stats.csv").open() as handle:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}
    for mode, kind in (("ws", "WS"), ("http_full", "HTTP"), ("http_chained", "HTTP")):
        turns = rows[kind, f"{mode} turn"]
        assert int(turns["Request Count"]) > 0
        assert int(turns["Failure Count"]) == 0
        assert int(rows["TTFT", mode]["Request Count"]) > 0


def test_locust_fails_the_run_when_a_threshold_is_exceeded(cluster: LocalCluster, tmp_path: Path) -> None:
    argv = _locust(
        cluster, "-u", "1", "-r", "1", "-t", "3s", "--tool-calls", "1", "--max-p95-ttft-ms", "0.001"
    )
    result = _run([*argv, "WebSocketAgent"], ROOT)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "threshold exceeded: p95 time to first token" in result.stderr


def test_locust_takes_the_key_from_openai_api_key_unless_one_is_given(cluster: LocalCluster) -> None:
    argv = _locust(
        cluster, "-u", "1", "-r", "1", "-t", "2s", "--tool-calls", "1", "--max-p95-ttft-ms", "5000"
    )
    # No --api-key: the environment's key is sent, and this cluster refuses it.
    refused = _run([*argv, "HttpFullContextAgent"], ROOT, OPENAI_API_KEY="sk-not-this-cluster")
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert "401" in refused.stderr, refused.stderr[-3000:]
    assert "threshold exceeded" in refused.stderr
    with_flag = [*argv, "--api-key", cluster.spec.api_key, "HttpFullContextAgent"]
    served = _run(with_flag, ROOT, OPENAI_API_KEY="sk-not-this-cluster")
    assert served.returncode == 0, served.stderr[-3000:]  # the flag wins over the environment


def test_tether_bench_smoke_measures_every_arm_and_agrees_with_the_metrics(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    argv = [sys.executable, "-m", "tether", "bench", "--smoke", "--base-url", cluster.base_url]
    argv += ["--out", str(out)]
    for url in cluster.metrics_urls.values():
        argv += ["--metrics", url]
    process = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=BUDGET)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert f"{PREFIX}{process.pid}-" not in " ".join(namespaces())  # no namespace left behind
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.md").read_text().startswith("# Tether benchmark")
    assert (out / "bytes_per_turn.png").stat().st_size > 0
    links = ["loopback"] if unavailable() else ["loopback", "shaped"]
    assert sorted(results["arms"]["cluster"]) == sorted(links)  # a running cluster: its own KV budget
    for link in links:
        per_arm = results["arms"]["cluster"][link]["2"]  # its routing is affinity: no round-robin arm
        assert sorted(per_arm) == [
            "http_chained:affinity", "http_full:affinity", "ws:affinity", "ws:affinity:plain",
        ]  # fmt: skip
        assert per_arm["ws:affinity"]["deflate"]["negotiated"] == 2  # the box answers the client's offer
        assert per_arm["ws:affinity:plain"]["deflate"]["negotiated"] == 0
        for step in per_arm.values():
            assert step["client"]["errors"] == 0
            assert step["runs_summary"]["runs"] == 2
            assert step["agreement"]["up_payload"] == pytest.approx(1.0, abs=0.02)
            assert step["agreement"]["down_payload"] == pytest.approx(1.0, abs=0.02)
            assert step["agreement"]["up_wire"] == pytest.approx(1.0, abs=0.02)
    assert results["summary"]["upload"]["reduction"] > 0
    assert "skipped" in results["meta"]  # the round-robin arm, with the reason
    assert set(results["capacity"]) == {"ws", "http_full"}
    assert "| target | goal | measured | met |" in stdout
