"""Render the Kubernetes manifests with kustomize and validate every object offline.

    python -m deploy.kubernetes.validate                    # every overlay and the KServe example
    python -m deploy.kubernetes.validate deploy/kubernetes/overlays/gpu

Three checks, each a failure when it finds anything:
- built-in kinds against the Kubernetes API schemas that kubernetes-validate ships, in strict mode
  (unknown fields fail), for each version in KUBERNETES_VERSIONS;
- custom kinds (ServiceMonitor, ScaledObject, InferenceService) against the CRD schemas vendored in
  crd-schemas/ (SOURCES.md), made strict the way the API server's field validation is: a field a
  schema does not name fails, unless that object is free-form. A kind with no schema at all fails
  (kubernetes-validate's own command line only warns about it);
- references between the rendered objects: ConfigMaps, Secrets and PersistentVolumeClaims the pods use,
  the volumes their containers mount, the scale targets of autoscalers, and the selectors of Services,
  budgets, policies and monitors, which must each select a pod template (a typo there validates and
  then selects nothing, or leaves a pod Pending).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGETS = ("overlays/cpu", "overlays/gpu", "overlays/fixed", "overlays/keda", "kserve")
# The oldest Kubernetes the manifests are meant for (autoscaling/v2, policy/v1: 1.23+) that the
# schemas cover, and the newest they cover.
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-v1alpha1.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
}


@dataclass(frozen=True)
class Problem:
    target: str
    obj: str  # Kind/name
    message: str

    def __str__(self) -> str:
        return f"{self.target}: {self.obj}: {self.message}"


def kubectl() -> str:
    """The pinned kubectl that renders (scripts/ensure-kustomize.sh installs it on first use)."""
    result = subprocess.run([str(ROOT / "scripts" / "ensure-kustomize.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cannot render the manifests: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed: the objects the cluster would receive."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"kustomize failed for {directory}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it names its fields (API server field
    validation), except in objects marked free-form."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def kubernetes_definitions(version: str) -> Resource:
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    return Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))


@functools.cache
def crd_validator(schema_file: str, version: str) -> jsonschema.protocols.Validator:
    path = HERE / "crd-schemas" / schema_file
    schema = strict(json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text()))
    registry = Registry().with_resource(K8S_DEFINITIONS, kubernetes_definitions(version))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def check_schema(obj: dict[str, Any], version: str) -> Iterator[str]:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        for error in crd_validator(CRD_SCHEMAS[key], version).iter_errors(obj):
            yield f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message} (CRD schema)"
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        yield f"no schema for {key[0]} {key[1]} in Kubernetes {version} nor in crd-schemas/: unknown kind or apiVersion"
    except kubernetes_validate.ValidationError as error:
        yield f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message} (Kubernetes {version})"


def pod_templates(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner, pod spec with its labels) for every Deployment and InferenceService predictor."""
    found = []
    for obj in objects:
        if obj.get("kind") == "Deployment":
            template = obj["spec"]["template"]
            found.append((obj, {"labels": template["metadata"].get("labels", {}), **template["spec"]}))
        elif obj.get("kind") == "InferenceService":
            found.append((obj, {"labels": {}, **obj["spec"]["predictor"]}))
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    names = {(o.get("kind"), o["metadata"]["name"]) for o in objects}
    pods = pod_templates(objects)
    for owner, pod in pods:
        for container in pod.get("containers", []):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef") or {}
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                if (kind, ref.get("name")) not in names:
                    yield name_of(owner), f"envFrom names {kind} {ref.get('name')!r}, which is not rendered"
        for volume in pod.get("volumes", []):
            for kind, field, key in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name"),
                                     ("PersistentVolumeClaim", "persistentVolumeClaim", "claimName")):
                if field in volume and (kind, volume[field].get(key)) not in names:
                    yield name_of(owner), f"volume {volume['name']} names {kind} {volume[field].get(key)!r}, which is not rendered"
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    yield name_of(owner), f"container {container['name']} mounts volume {mount['name']!r}, which the pod does not have"
    labels = [pod["labels"] for _, pod in pods]
    for obj in objects:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = spec["scaleTargetRef"]
            if ("Deployment", target.get("name")) not in names:
                yield name_of(obj), f"scales Deployment {target.get('name')!r}, which is not rendered"
        selector = None
        if kind == "Service":
            selector = spec.get("selector")
        elif kind in ("PodDisruptionBudget", "ServiceMonitor"):
            selector = spec.get("selector", {}).get("matchLabels")
        elif kind == "NetworkPolicy":
            selector = spec.get("podSelector", {}).get("matchLabels")
        if selector is None:
            continue
        if kind == "ServiceMonitor":
            services = [o for o in objects if o.get("kind") == "Service"]
            if not any(selects(selector, s["metadata"].get("labels", {})) for s in services):
                yield name_of(obj), f"selects no Service (matchLabels {selector})"
        elif not any(selects(selector, pod_labels) for pod_labels in labels):
            yield name_of(obj), f"selects no pod template (labels {selector})"


def validate_objects(target: str, objects: list[dict[str, Any]]) -> list[Problem]:
    problems = []
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            problems += [Problem(target, name_of(obj), m) for m in check_schema(copy.deepcopy(obj), version)]
    problems += [Problem(target, obj, m) for obj, m in check_references(objects)]
    return sorted(set(problems), key=str)


def validate(directory: Path) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Render one kustomization and validate everything it renders."""
    try:
        objects = render(directory)
    except ValueError as error:
        return [], [Problem(str(directory), "(render)", str(error))]
    return objects, validate_objects(str(directory), objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, help=f"kustomizations (default: {', '.join(TARGETS)})")
    args = parser.parse_args(argv)
    failed = 0
    for directory in args.dirs or [HERE / t for t in TARGETS]:
        objects, problems = validate(directory)
        shown = directory.resolve().relative_to(ROOT) if directory.resolve().is_relative_to(ROOT) else directory
        kinds = ", ".join(sorted({o["kind"] for o in objects}))
        print(f"{shown}: {len(objects)} objects ({kinds}): {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem.obj}: {problem.message}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
