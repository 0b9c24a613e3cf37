"""`tether-router`'s command line: settings it cannot serve are refused before anything starts (exit 2)."""

from __future__ import annotations

import importlib.util

import pytest

from router.__main__ import main


def test_k8s_membership_without_the_kubernetes_client_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "kubernetes" else real(name, *a)
    )
    assert main(["--k8s-service", "api-box-headless"]) == 2
    assert "pip install 'tether[k8s]'" in capsys.readouterr().err
