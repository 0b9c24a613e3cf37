"""The image, the chart and the kind script agree with each other and with pyproject.toml.

No container engine runs here (CI has none): these read deploy/Dockerfile, .dockerignore, deploy/kind/ and
the chart, and check the facts that would otherwise only break at `docker build` / `kind` time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from chart_render import CHART, ROOT, containers, render

DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
DOCKERIGNORE = (ROOT / ".dockerignore").read_text().split("\n")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
KIND_UP = ROOT / "deploy" / "kind" / "up"
KIND_CLUSTER = yaml.safe_load((ROOT / "deploy" / "kind" / "cluster.yaml").read_text())
KIND_VALUES = yaml.safe_load((CHART / "ci" / "kind-values.yaml").read_text())


def _packages() -> list[str]:
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return [p.rstrip("*") for p in patterns]


def test_image_copies_every_package_and_the_context_lets_them_in() -> None:
    copied = set(re.findall(r"^COPY (\w+) \./\1$", DOCKERFILE, flags=re.MULTILINE))
    assert copied == set(_packages())
    for package in _packages():
        assert f"!{package}/" in DOCKERIGNORE
    rules = [line for line in DOCKERIGNORE if line and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore must exclude everything first, then let the packages in"


def test_image_runs_as_the_user_the_chart_expects() -> None:
    (user,) = re.findall(r"^USER (\d+):(\d+)$", DOCKERFILE, flags=re.MULTILINE)
    pod = render().workload("api-box")["spec"]["template"]["spec"]
    assert (int(user[0]), int(user[1])) == (
        pod["securityContext"]["runAsUser"],
        pod["securityContext"]["runAsGroup"],
    )


def test_chart_commands_are_the_image_entry_points() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    r = render()
    commands = {containers(r.workload(c))[0]["command"][0] for c in ("router", "api-box", "worker")}
    assert commands == {"tether-router", "tether-api-box", "tether-gpu-worker"}
    assert commands <= set(scripts)
    for command in commands:
        assert f"{command} --help" in DOCKERFILE, f"the build does not smoke-check {command}"


def test_image_exposes_the_chart_default_ports() -> None:
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.+)$", DOCKERFILE, flags=re.MULTILINE)[0].split()}
    r = render()
    ports = {
        p["containerPort"]
        for c in ("router", "api-box", "worker")
        for p in containers(r.workload(c))[0]["ports"]
    }
    assert ports == exposed


def test_uvloop_the_sdk_and_the_kubernetes_client_are_in_the_image() -> None:
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    assert "uvloop" in deps
    (image_extras,) = re.findall(r'^ARG IMAGE_EXTRAS="([\w,]+)"$', DOCKERFILE, flags=re.MULTILINE)
    installed = " ".join(
        d for e in image_extras.split(",") for d in PYPROJECT["project"]["optional-dependencies"][e]
    )
    assert "openai" in installed  # the chart's smoke test runs in the same image
    assert "kubernetes" in installed  # the router's --k8s-service
    assert '"${IMAGE_EXTRAS}" "${TETHER_EXTRAS}"' in DOCKERFILE
    assert "import uvloop, openai, kubernetes" in DOCKERFILE


def test_openai_and_kubernetes_are_extras_not_base_dependencies() -> None:
    base = " ".join(PYPROJECT["project"]["dependencies"])
    assert "openai" not in base.replace("bpe-openai", "")
    assert "kubernetes" not in base
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(d.startswith("openai") for d in extras["demo"])
    assert any(d.startswith("kubernetes") for d in extras["k8s"])
    demo = (ROOT / "scripts" / "demo").read_text()
    assert 'TETHER_EXTRAS="demo"' in demo  # ./scripts/demo installs the SDK its agent run uses


def test_kind_maps_the_router_node_port_to_the_host() -> None:
    (control_plane,) = [n for n in KIND_CLUSTER["nodes"] if n["role"] == "control-plane"]
    (mapping,) = control_plane["extraPortMappings"]
    assert mapping["containerPort"] == KIND_VALUES["router"]["service"]["nodePort"]
    assert KIND_VALUES["router"]["service"]["type"] == "NodePort"
    assert mapping["listenAddress"] == "127.0.0.1"


def test_kind_script_installs_the_values_the_tests_render() -> None:
    text = KIND_UP.read_text()
    assert "VALUES=helm/tether/ci/kind-values.yaml" in text
    assert "deploy/kind/cluster.yaml" in text
    for step in ("docker build", "kind create cluster", "kind load docker-image", "--wait", "helm test"):
        assert step in text.replace('"$ENGINE" build', "docker build"), step
    assert ":latest" not in text.replace("Never :latest", "")


def test_kind_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(KIND_UP)], check=True, timeout=30)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shell_scripts_pass_shellcheck() -> None:
    subprocess.run(["shellcheck", str(KIND_UP)], check=True, timeout=60)


def test_readme_kubernetes_section_matches_the_files() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Kubernetes") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    for path in re.findall(r"`((?:deploy|helm|docs)/[\w./-]+)`", section):
        assert (ROOT / path.split()[0]).exists(), path
    (mapping,) = next(n for n in KIND_CLUSTER["nodes"] if n["role"] == "control-plane")["extraPortMappings"]
    assert f"http://127.0.0.1:{mapping['hostPort']}/v1" in section
    default_keys = yaml.safe_load((CHART / "values.yaml").read_text())["apiKeys"]["keys"]
    assert f"key `{default_keys[0]['key']}`" in section
    assert "helm test tether -n tether --logs" in section
