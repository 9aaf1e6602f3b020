"""The Kubernetes manifests (deploy/kubernetes): every overlay rendered with the pinned kustomize and
validated offline (Kubernetes schemas, vendored CRD schemas, references), broken manifests refused,
and the promises of docs/SCALING.md read off the rendered objects."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from deploy.kubernetes import validate as k8s
from gru_encoder.host import deploy_env
from gru_encoder.host.settings import ENV_PREFIX, ServingSettings

OVERLAYS = ("overlays/cpu", "overlays/gpu", "overlays/fixed", "overlays/keda")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {target: k8s.render(k8s.HERE / target) for target in k8s.TARGETS}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def torchserve(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = find(objects, "Deployment", "gru-encoder-torchserve")
    return deployment


@pytest.mark.parametrize("target", k8s.TARGETS)
def test_every_rendered_object_passes_the_offline_validation(rendered, target: str) -> None:
    assert rendered[target], f"{target} rendered nothing"
    assert k8s.validate_objects(target, rendered[target]) == []


def test_the_command_line_validates_everything_and_says_so(capsys) -> None:
    assert k8s.main([]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == len(k8s.TARGETS), out


def mutated(objects: list[dict[str, Any]], kind: str, name: str, change) -> list[dict[str, Any]]:
    objects = copy.deepcopy(objects)
    change(next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name))
    return objects


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


TS = "gru-encoder-torchserve"
BROKEN = {
    "misspelt field": ("Deployment", TS, lambda d: container(d)["ports"][0].update(containerport=8080), "'containerport' was unexpected"),
    "wrong type": ("Deployment", TS, lambda d: d["spec"].update(replicas="two"), "'two' is not of type"),
    "misspelt kind": ("Service", TS, lambda d: d.update(kind="Servce"), "no schema for v1 Servce"),
    "missing required field": ("Deployment", TS, lambda d: d["spec"].pop("selector"), "'selector' is a required property"),
    "CRD: misspelt ScaledObject field": ("ScaledObject", TS, lambda d: d["spec"].update(maxReplicaCnt=3), "'maxReplicaCnt' was unexpected"),
    "CRD: misspelt ServiceMonitor field": ("ServiceMonitor", TS, lambda d: d["spec"]["endpoints"][0].update(intervall="15s"), "'intervall' was unexpected"),
    "CRD: bad ServiceMonitor interval": ("ServiceMonitor", TS, lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"), "does not match"),
    "CRD: missing ScaledObject triggers": ("ScaledObject", TS, lambda d: d["spec"].pop("triggers"), "'triggers' is a required property"),
    "ConfigMap that is not rendered": ("Deployment", TS, lambda d: container(d)["envFrom"][0]["configMapRef"].update(name="gru-encoder-servng"), "which is not rendered"),
    "Service selecting no pod": ("Service", TS, lambda d: d["spec"]["selector"].update({"app.kubernetes.io/component": "torchserv"}), "selects no pod template"),
    "autoscaler of no Deployment": ("ScaledObject", TS, lambda d: d["spec"]["scaleTargetRef"].update(name="torchserve"), "scales Deployment 'torchserve'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_fails_the_validation(rendered, case: str) -> None:
    kind, name, change, expected = BROKEN[case]
    problems = k8s.validate_objects("keda", mutated(rendered["overlays/keda"], kind, name, change))
    assert any(expected in str(p) for p in problems), problems


@pytest.mark.parametrize(("change", "expected"), [
    (lambda p: p.update(scaleTargt=16), "'scaleTargt' was unexpected"),
    (lambda p: p["containers"][0].update(imagee="gru-encoder"), "'imagee' was unexpected"),  # the Kubernetes Container schema
    (lambda p: p.update(minReplicas="one"), "'one' is not of type 'integer'"),
])
def test_a_broken_inference_service_fails_the_validation(rendered, change, expected: str) -> None:
    objects = copy.deepcopy(rendered["kserve"])
    change(objects[0]["spec"]["predictor"])
    assert any(expected in str(p) for p in k8s.validate_objects("kserve", objects))


def test_a_broken_kustomization_on_disk_fails_to_render(tmp_path: Path) -> None:
    """The same path as `make k8s-validate`: a copy of the tree with a misspelt field in a file."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(k8s.HERE, tree, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    torchserve_file = tree / "base" / "torchserve.yaml"
    torchserve_file.write_text(torchserve_file.read_text().replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    objects, problems = k8s.validate(tree / "overlays" / "cpu")
    assert objects and any("'readOnlyRootFileSystem' was unexpected" in str(p) for p in problems)
    (tree / "base" / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    assert any(p.obj == "(render)" for p in k8s.validate(tree / "overlays" / "cpu")[1])


@pytest.mark.parametrize("target", OVERLAYS)
def test_pods_run_non_root_read_only_with_limits_and_probes(rendered, target: str) -> None:
    for deployment in find(rendered[target], "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
            assert c["readinessProbe"] and c["livenessProbe"]
    ts = container(torchserve(rendered[target]))
    # Ready = a real prediction checked against the contract, not /ping.
    assert ts["readinessProbe"]["exec"]["command"] == ["python3", "/usr/local/bin/gru-encoder-healthcheck"]
    assert ts["startupProbe"]["httpGet"]["path"] == "/ping"
    # Requests = limits: the CPU quota the settings divide among the workers (torch_threads 0).
    assert ts["resources"]["requests"] == ts["resources"]["limits"]


def test_management_and_metrics_are_not_reachable_from_outside(rendered) -> None:
    objects = rendered["overlays/cpu"]
    ts = container(torchserve(objects))
    assert sorted(p["containerPort"] for p in ts["ports"]) == [8080, 8082]  # never 8081 (management)
    [policy] = find(objects, "NetworkPolicy", TS)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []
    rules = {r["ports"][0]["port"]: r["from"] for r in policy["spec"]["ingress"]}
    assert set(rules) == {8080, 8082}
    assert rules[8080][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert rules[8082] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    [gateway_policy] = find(objects, "NetworkPolicy", "gru-encoder-gateway")
    dns = [r for r in gateway_policy["spec"]["egress"] if {p["port"] for p in r["ports"]} == {53}]
    # By namespace alone: commonLabels adds this app's labels to any podSelector, which would select no DNS pod.
    assert dns and dns[0]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
    [service] = find(objects, "Service", TS)
    assert service["spec"]["clusterIP"] == "None"  # headless: the gateways see every pod


def test_the_gateway_reaches_torchserve_by_its_full_name_and_rate_is_per_replica(rendered) -> None:
    objects = rendered["overlays/cpu"]
    [gateway] = find(objects, "Deployment", "gru-encoder-gateway")
    env = {e["name"]: e for e in container(gateway)["env"]}
    assert env["GATEWAY_UPSTREAM"]["value"] == "gru-encoder-torchserve.$(POD_NAMESPACE).svc.cluster.local:8080"
    [settings] = [c for c in find(objects, "ConfigMap") if c["metadata"]["name"].startswith("gru-encoder-gateway")]
    rate = int(settings["data"]["GATEWAY_RATE"].removesuffix("r/s"))
    assert rate * gateway["spec"]["replicas"] == 50  # compose's per-key rate, split over the replicas
    assert "HorizontalPodAutoscaler" not in {o["kind"] for o in objects if o["metadata"]["name"] == "gru-encoder-gateway"}


def test_overlays_differ_where_they_should(rendered) -> None:
    kinds = {t: {o["kind"] for o in rendered[t]} for t in OVERLAYS}
    assert "HorizontalPodAutoscaler" in kinds["overlays/cpu"] and "HorizontalPodAutoscaler" in kinds["overlays/gpu"]
    assert "HorizontalPodAutoscaler" not in kinds["overlays/fixed"] | kinds["overlays/keda"]
    assert "ScaledObject" in kinds["overlays/keda"]
    cpu, gpu = container(torchserve(rendered["overlays/cpu"])), container(torchserve(rendered["overlays/gpu"]))
    assert cpu["image"] == "gru-encoder:cpu" and "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert gpu["image"] == "gru-encoder:cuda" and gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert torchserve(rendered["overlays/fixed"])["spec"]["replicas"] == 3
    for target in OVERLAYS:
        [secret] = find(rendered[target], "Secret")
        assert secret["metadata"]["name"].startswith("gru-encoder-api-keys-")  # versioned: a new list rolls the gateways


def test_the_inference_service_runs_the_project_image_with_concurrency_autoscaling(rendered) -> None:
    [isvc] = rendered["kserve"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["scaleMetric"] == "concurrency" and predictor["scaleTarget"] == 16
    assert [c["image"] for c in predictor["containers"]] == ["gru-encoder:cpu"]
    assert not any(k in predictor for k in ("pytorch", "model"))  # a custom predictor, no KServe runtime
    assert [p["containerPort"] for p in predictor["containers"][0]["ports"]] == [8080]


# Values an overlay gives the serving settings of its own (a configMapGenerator with `behavior: merge`);
# every other setting is ServingSettings' default, as serving.env renders it.
OVERLAY_SETTINGS: dict[str, dict[str, str]] = {target: {} for target in OVERLAYS}


def serving_env(c: dict[str, Any]) -> dict[str, str]:
    """The GRU_ENCODER_* variables a container sets itself (not through a ConfigMap)."""
    return {e["name"]: e["value"] for e in c.get("env", []) if e["name"].startswith(ENV_PREFIX)}


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_pods_get_every_deployed_setting_from_the_generated_config_map(rendered, target: str) -> None:
    """The gru-encoder-serving ConfigMap holds exactly the settings deploy_env says a deployment carries,
    at their defaults (serving.env is generated: make deploy-env); the image's address, paths and ports
    are never restated."""
    objects = rendered[target]
    ts = container(torchserve(objects))
    [name] = [e["configMapRef"]["name"] for e in ts["envFrom"]]
    [config_map] = find(objects, "ConfigMap", name)
    expected = {**deploy_env.deployed_env(), **OVERLAY_SETTINGS[target]}
    data = config_map["data"]
    assert not set(expected) - set(data), f"missing from serving.env: {sorted(set(expected) - set(data))} (make deploy-env)"
    assert not set(data) - set(expected), f"not a deployed serving setting: {sorted(set(data) - set(expected))}"
    assert data == expected, "serving.env differs from ServingSettings' defaults: make deploy-env"
    ServingSettings.from_env(data)  # and the values are valid settings
    assert serving_env(ts) == {}, "a setting outside the ConfigMap: put it in serving.env (or an overlay's merge)"


def test_the_inference_service_sets_only_deployed_settings_and_valid_ones(rendered) -> None:
    [isvc] = rendered["kserve"]
    env = serving_env(isvc["spec"]["predictor"]["containers"][0])
    deployed = set(deploy_env.deployed_env())
    assert set(env) <= deployed, f"not deploy-time settings (the image's, or unknown): {sorted(set(env) - deployed)}"
    ServingSettings.from_env(env)
