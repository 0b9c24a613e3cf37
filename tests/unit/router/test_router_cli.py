"""`tether-router`'s command line: settings it cannot serve are refused before anything starts (exit 2);
its JSON logs are lines of the shared schema (docs/logging.md)."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest

from router.__main__ import configure_logging, main
from router.config import Settings


def test_k8s_membership_without_the_kubernetes_client_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "kubernetes" else real(name, *a)
    )
    assert main(["--k8s-service", "api-box-headless"]) == 2
    assert "pip install 'tether[k8s]'" in capsys.readouterr().err


@pytest.mark.usefixtures("root_logger")
def test_json_logs_are_lines_of_the_shared_schema(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.from_env({"TETHER_ROUTER_BOXES": "a=127.0.0.1:1", "TETHER_ROUTER_LOG_FORMAT": "json"})
    configure_logging(settings)
    try:
        raise OSError("refused")
    except OSError:
        logging.getLogger("router.relay").exception("connect to %s failed", "box-0")
    line = json.loads(capsys.readouterr().err)
    assert (line["level"], line["logger"], line["msg"], line["component"]) == (
        "error",
        "router.relay",
        "connect to box-0 failed",
        "router",
    )
    assert "OSError: refused" in line["exc"]
    assert "message" not in line
