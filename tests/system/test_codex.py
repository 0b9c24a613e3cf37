"""The real Codex CLI (npm @openai/codex, installed by scripts/test into .tools/codex) against a local
cluster through the router: `codex exec` completes a task, and its turns go over WebSocket.

Codex's first request carries function tools, a `namespace` tool, a `web_search` tool, developer
messages, reasoning/include/prompt_cache_key/client_metadata, and it falls back to HTTP only on a 426 at
the upgrade: so a run that completes with every response counted in WebSocket mode and no error counted
is a run where the box accepted all of it. The sim model calls random tools with noise arguments (Codex
answers them with errors, in a read-only sandbox) a few times, then answers: the task completes whatever
it says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import metric_total
from tether.codex import CODEX_BIN, MISSING, run_exec
from tether.config import DEV_API_KEY
from tether.supervisor import LocalCluster

pytestmark = pytest.mark.skipif(not CODEX_BIN.exists(), reason=MISSING)


def test_codex_exec_completes_a_task_over_websocket_through_the_router(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    assert cluster.router_url is not None
    before = {
        mode: metric_total(cluster, "tether_box_responses_total", mode=mode, status="completed")
        for mode in ("ws", "http", "sse")
    }
    errors_before = metric_total(cluster, "tether_box_errors_total")
    relayed_before = metric_total(
        cluster, "tether_router_bytes_total", mode="ws", direction="client_to_server"
    )
    deflated_before = metric_total(cluster, "tether_box_websocket_deflate_total", negotiated="yes")
    run = run_exec(
        "Say hello.",
        base_url=cluster.base_url,
        api_key=DEV_API_KEY,
        model="tether-sim",
        home=tmp_path / "codex-home",
        workdir=tmp_path / "work",
        timeout=150,
    )
    assert run.completed, f"codex exec exited {run.returncode}:\n{run.stderr[-4000:]}\n{run.events}"
    assert not run.ignored_settings
    ws = metric_total(cluster, "tether_box_responses_total", mode="ws", status="completed") - before["ws"]
    # The warm-up (generate: false) and at least one turn that answers.
    assert ws >= 2, run.stderr[-4000:]
    for mode in ("http", "sse"):  # no fallback to HTTP
        assert (
            metric_total(cluster, "tether_box_responses_total", mode=mode, status="completed") == before[mode]
        )
    assert metric_total(cluster, "tether_box_errors_total") == errors_before, run.stderr[-4000:]
    assert (
        metric_total(cluster, "tether_router_bytes_total", mode="ws", direction="client_to_server")
        > relayed_before
    )
    # Codex offers permessage-deflate; the box negotiates it through the router.
    assert metric_total(cluster, "tether_box_websocket_deflate_total", negotiated="yes") > deflated_before
