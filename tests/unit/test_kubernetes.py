"""The Kubernetes manifests (deploy/kubernetes): every overlay rendered with the pinned kustomize and
validated offline (Kubernetes schemas, vendored CRD schemas, references), broken manifests refused,
and the promises of docs/SCALING.md read off the rendered objects."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.kubernetes import validate as k8s
from gru_encoder.api.release_conf import RELEASE_DIR, RELEASE_FILE
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
    "claim that is not rendered": ("Deployment", TS, lambda d: store_volume(d)["persistentVolumeClaim"].update(claimName="gru-encoder-model-stor"), "PersistentVolumeClaim 'gru-encoder-model-stor', which is not rendered"),
    "mount of no volume": ("Deployment", "gru-encoder-gateway", lambda d: container(d)["volumeMounts"][-1].update(name="model-stor"), "mounts volume 'model-stor', which the pod does not have"),
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
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
        for c in pod["containers"]:
            # The release toolbox runs nothing of its own to probe (models-toolbox.yaml).
            if deployment["metadata"]["name"] != MODELS:
                assert c["readinessProbe"] and c["livenessProbe"]
    ts = container(torchserve(rendered[target]))
    # Ready = a real prediction checked against the contract, not /ping.
    assert ts["readinessProbe"]["exec"]["command"] == ["python3", "/usr/local/bin/gru-encoder-healthcheck"]
    assert ts["startupProbe"]["httpGet"]["path"] == "/ping"
    # Requests = limits: the CPU quota the settings divide among the workers (torch_threads 0); the init
    # container's too, or the pod would not be Guaranteed.
    for c in pod_spec(torchserve(rendered[target]))["initContainers"] + [ts]:
        assert c["resources"]["requests"] == c["resources"]["limits"], c["name"]


def test_management_and_metrics_are_not_reachable_from_outside(rendered) -> None:
    objects = rendered["overlays/cpu"]
    ts = container(torchserve(objects))
    assert sorted(p["containerPort"] for p in ts["ports"]) == [8080, 8082]  # never 8081 (management)
    [policy] = find(objects, "NetworkPolicy", TS)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []
    rules = {r["ports"][0]["port"]: r["from"] for r in policy["spec"]["ingress"]}
    assert set(rules) == {8080, 8082}
    # Inference from the gateways and the release toolbox (it checks each replica's answers there).
    assert {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rules[8080]} == {"gateway", "models"}
    # Metrics from Prometheus's namespace, and from the toolbox (retire reads when a version last answered a pinned request).
    assert rules[8082][0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rules[8082][1:]] == ["models"]
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


# The model store and the release toolbox (docs/SCALING.md, "Model versions on Kubernetes").
MODELS = "gru-encoder-models"
GATEWAY = "gru-encoder-gateway"
STORE_CLAIM = "gru-encoder-model-store"
REPLICAS_SERVICE = "torchserve-replicas"
ROOT = k8s.ROOT


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def store_volume(deployment: dict[str, Any]) -> dict[str, Any]:
    [volume] = [v for v in pod_spec(deployment)["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == STORE_CLAIM]
    return volume


def store_mounts(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Container name -> its mount of the model store, init containers included."""
    name = store_volume(deployment)["name"]
    spec = pod_spec(deployment)
    return {c["name"]: m for c in spec.get("initContainers", []) + spec["containers"] for m in c.get("volumeMounts", []) if m["name"] == name}


def init_container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in pod_spec(deployment)["initContainers"] if c["name"] == name]
    return found


def image_model_store() -> str:
    """Where the serving image keeps its store and its baked archive (the Dockerfile's ENV)."""
    return re.search(r"GRU_ENCODER_MODEL_STORE=(\S+)", (ROOT / "Dockerfile").read_text()).group(1)


def gateway_release_file_default() -> str:
    """Where the gateway's entrypoint reads the release file unless GATEWAY_RELEASE_FILE says otherwise."""
    return re.search(r'RELEASE_FILE="\$\{GATEWAY_RELEASE_FILE:-([^}]+)\}"', (ROOT / "docker/gateway/entrypoint.sh").read_text()).group(1)


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_model_store_is_one_shared_claim_that_only_the_toolbox_writes(rendered, target: str) -> None:
    objects = rendered[target]
    [claim] = find(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == STORE_CLAIM and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class, or an overlay's
    deployments = {d["metadata"]["name"]: d for d in find(objects, "Deployment")}
    assert set(deployments) == {TS, GATEWAY, MODELS}
    writers = {name for name, d in deployments.items()
               if not store_volume(d)["persistentVolumeClaim"].get("readOnly") or not all(m.get("readOnly") for m in store_mounts(d).values())}
    assert writers == {MODELS}
    store = image_model_store()
    # TorchServe serves the shared store where the image's settings look for it, over the baked archive.
    assert store_mounts(deployments[TS])["torchserve"]["mountPath"] == store
    assert "subPath" not in store_mounts(deployments[TS])["torchserve"]
    # The gateway sees the release folder alone, where its entrypoint reads the release file.
    gateway_mount = store_mounts(deployments[GATEWAY])["gateway"]
    assert gateway_mount["subPath"] == RELEASE_DIR
    env = {e["name"]: e.get("value") for e in container(deployments[GATEWAY]).get("env", [])}
    release_file = env.get("GATEWAY_RELEASE_FILE", gateway_release_file_default())
    assert release_file == f"{gateway_mount['mountPath']}/{RELEASE_FILE}"
    # The toolbox writes where `gru-encoder models --model-store` is told to (the same path as TorchServe's).
    assert store_mounts(deployments[MODELS])["models"]["mountPath"] == store


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_toolbox_is_one_idle_pod_of_the_serving_image_that_nothing_connects_to(rendered, target: str) -> None:
    objects = rendered[target]
    [toolbox] = find(objects, "Deployment", MODELS)
    assert toolbox["spec"]["replicas"] == 1 and toolbox["spec"]["strategy"]["type"] == "Recreate"  # one writer
    box = container(toolbox)
    assert box["image"] == container(torchserve(objects))["image"]  # the CLI and torch of the served image
    assert box["args"] == ["sleep", "infinity"] and "command" not in box  # tini, the image's ENTRYPOINT, stays PID 1
    assert pod_spec(toolbox)["securityContext"]["runAsUser"] == pod_spec(torchserve(objects))["securityContext"]["runAsUser"]
    labels = toolbox["spec"]["template"]["metadata"]["labels"]
    assert not [s["metadata"]["name"] for s in find(objects, "Service") if k8s.selects(s["spec"].get("selector", {}), labels)]
    for policy in find(objects, "NetworkPolicy"):
        if k8s.selects(policy["spec"]["podSelector"]["matchLabels"], labels):
            assert policy["spec"]["ingress"] == []


@pytest.mark.parametrize("target", OVERLAYS)
def test_the_release_check_reaches_every_ready_torchserve_pod_directly(rendered, target: str) -> None:
    objects = rendered[target]
    [service] = find(objects, "Service", REPLICAS_SERVICE)
    assert service["spec"]["clusterIP"] == "None"  # one DNS answer per pod, not one virtual address
    assert not service["spec"].get("publishNotReadyAddresses")  # the pods the gateways send to
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8080, "http")]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in find(objects, "Deployment")}
    assert {name for name, labels in pods.items() if k8s.selects(service["spec"]["selector"], labels)} == {TS}
    assert {p["name"]: p["containerPort"] for p in container(torchserve(objects))["ports"]}["http"] == 8080
    [monitor] = find(objects, "ServiceMonitor")  # scrapes gru-encoder-torchserve once, not this one too
    assert not k8s.selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])


def test_the_toolbox_reaches_inference_and_metrics_and_nothing_reaches_management(rendered) -> None:
    objects = rendered["overlays/cpu"]
    policies = {p["metadata"]["name"]: p["spec"] for p in find(objects, "NetworkPolicy")}
    assert set(policies) == {TS, GATEWAY, MODELS}
    rules = [r for spec in policies.values() for r in spec["ingress"] + spec["egress"]]
    # Every rule names its ports (a rule without ports admits them all), and none is management's.
    assert rules and all(r.get("ports") for r in rules)
    assert 8081 not in {p["port"] for r in rules for p in r["ports"]}
    toolbox = policies[MODELS]
    assert toolbox["policyTypes"] == ["Ingress", "Egress"] and toolbox["ingress"] == []
    egress = {p["port"]: r["to"] for r in toolbox["egress"] for p in r["ports"]}
    assert set(egress) == {53, 8080, 8082}  # DNS, each replica's answers, each replica's pinned-traffic figures
    assert egress[8080] == egress[8082] == [{"podSelector": policies[TS]["podSelector"]}]
    assert {p["port"] for r in policies[GATEWAY]["egress"] for p in r["ports"]} == {53, 8080}  # no new door for the gateway


def docs_release_command() -> str:
    text = (ROOT / "docs/SCALING.md").read_text()
    section = text.split("## Model versions on Kubernetes", 1)[1].split("\n## ", 1)[0]
    [command] = set(re.findall(r"kubectl exec deploy/\S+ -- gru-encoder models [^\n\"]*--replicas-dns \S+", section))
    return command


def test_the_documented_release_command_names_the_rendered_toolbox_store_and_service(rendered) -> None:
    command = docs_release_command()
    deployment, store, target = re.fullmatch(r"kubectl exec deploy/(\S+) -- gru-encoder models --model-store (\S+) --replicas-dns (\S+)", command).groups()
    objects = rendered["overlays/cpu"]
    [toolbox] = find(objects, "Deployment", deployment)
    assert store_mounts(toolbox)["models"]["mountPath"] == store
    host, port = target.rsplit(":", 1)
    [service] = find(objects, "Service", host)  # resolved in the toolbox's own namespace (resolv.conf's search)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]


def run_script(c: dict[str, Any], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """An init container's shell script, run here with its variables pointed at temporary folders."""
    assert c["command"][:2] == ["sh", "-c"]
    return subprocess.Popen(["sh", "-c", c["command"][2]], env={"PATH": "/usr/bin:/bin", **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_the_seed_fills_an_empty_store_once_and_makes_the_release_folder(rendered, tmp_path: Path) -> None:
    [toolbox] = find(rendered["overlays/cpu"], "Deployment", MODELS)
    seed = init_container(toolbox, "seed-store")
    env = {e["name"]: e["value"] for e in seed["env"]}
    # In the pod: the claim at STORE, the image's own archive at IMAGE_ARCHIVE, which the claim must not hide.
    assert env["STORE"] == store_mounts(toolbox)["seed-store"]["mountPath"] != image_model_store()
    assert env["IMAGE_ARCHIVE"] == f"{image_model_store()}/gru_encoder.mar"
    image, store = tmp_path / "image", tmp_path / "store"
    image.mkdir(), store.mkdir()
    (image / "gru_encoder.mar").write_bytes(b"version 1.0 of the image")
    here = {"STORE": str(store), "IMAGE_ARCHIVE": str(image / "gru_encoder.mar")}
    out = run_script(seed, here).communicate(timeout=10)[0]
    assert "seeded" in out and (store / "gru_encoder.mar").read_bytes() == b"version 1.0 of the image"
    assert (store / RELEASE_DIR).is_dir() and sorted(p.name for p in store.iterdir()) == ["gru_encoder.mar", RELEASE_DIR]
    # A store that has its archive keeps it: a new image never replaces a served version.
    (image / "gru_encoder.mar").write_bytes(b"another image's archive")
    proc = run_script(seed, here)
    assert "left as it is" in proc.communicate(timeout=10)[0] and proc.returncode == 0
    assert (store / "gru_encoder.mar").read_bytes() == b"version 1.0 of the image"
    # A store it cannot write is refused with what to do.
    proc = run_script(seed, {**here, "STORE": str(tmp_path / "missing")})
    assert "not writable" in proc.communicate(timeout=10)[0] and proc.returncode == 1


@pytest.mark.parametrize(("deployment", "name", "made"), [
    (TS, "wait-for-store", "gru_encoder.mar"),
    (GATEWAY, "wait-for-release", RELEASE_DIR),
])
def test_pods_wait_for_the_seeded_store_and_then_start(rendered, tmp_path: Path, deployment: str, name: str, made: str) -> None:
    [owner] = find(rendered["overlays/cpu"], "Deployment", deployment)
    wait = init_container(owner, name)
    env = {e["name"]: e["value"] for e in wait["env"]}
    assert env["STORE"] == store_mounts(owner)[name]["mountPath"] and store_mounts(owner)[name]["readOnly"] is True
    proc = run_script(wait, {"STORE": str(tmp_path)})
    time.sleep(0.5)
    assert proc.poll() is None  # still waiting on an empty store
    (tmp_path / made).mkdir() if made == RELEASE_DIR else (tmp_path / made).write_bytes(b"archive")
    out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0 and "deploy/gru-encoder-models" in out
    assert run_script(wait, {"STORE": str(tmp_path)}).communicate(timeout=5)[0] == ""  # seeded: no wait, no word
