"""The Kubernetes manifests (deploy/k8s), rendered by `kubectl kustomize` and checked offline.

Every rendered object is validated against the Kubernetes OpenAPI schemas shipped by
`kubernetes-validate` (strict: an unknown field is an error, as a typo would be dropped by the
API server), for the oldest and the newest Kubernetes minor it ships; the KEDA ScaledObject,
a custom resource it does not know, against deploy/k8s/schemas/keda-scaledobject.json. Then
the invariants a reviewer would check by hand: non-root and read-only containers, resources,
probes, no Secret in the base, at most one projector per partition, and settings that the
processes themselves accept.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from api.settings import ApiSettings
from projector.settings import ProjectorSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
KEDA = K8S / "overlays" / "keda"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
SCALED_OBJECT_SCHEMA = K8S / "schemas" / "keda-scaledobject.json"

# The oldest and the newest minor kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.25", "1.37")
VARIANTS = {"base": BASE, "keda": KEDA}

IMAGE = "ghcr.io/example/jobs-read-model:0.1.0"
NAME = "jobs-read-model"  # the ConfigMap, the Secret and the ServiceAccount
API = "jobs-read-model-api"
PROJECTOR = "jobs-read-model-projector"
UID = 10001  # the image's user (Dockerfile)
PARTITIONS = 4  # of jobs.events (docker-compose.yml's `topics`)
TMP = "/tmp"  # noqa: S108 - where the containers may write (an emptyDir), not a file of ours

Doc = dict[str, Any]


@cache
def _render(directory: Path) -> tuple[Doc, ...]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    docs = tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)
    assert docs, f"kubectl kustomize {directory} rendered nothing"
    return docs


def rendered(variant: str) -> tuple[Doc, ...]:
    return _render(VARIANTS[variant])


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployments(docs: tuple[Doc, ...]) -> list[Doc]:
    found = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in found} == {API, PROJECTOR}
    return found


def containers(deployment: Doc) -> Iterator[Doc]:
    pod = deployment["spec"]["template"]["spec"]
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def secret_example() -> Doc:
    docs = [d for d in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if d]
    assert len(docs) == 1
    doc: Doc = docs[0]
    return doc


def scaled_object_validator() -> Any:
    schema = json.loads(SCALED_OBJECT_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def k8s_errors(doc: Doc, version: str) -> str | None:
    """Why `doc` is not a valid object of Kubernetes `version` (strict); None if it is."""
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        return f"{doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}"
    assert validated == version, f"validated against {validated}, not {version}"
    return None


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_valid_for_kubernetes(variant: str, version: str) -> None:
    errors: list[str] = []
    validator = scaled_object_validator()
    for doc in rendered(variant):
        if doc["apiVersion"].startswith("keda.sh/"):
            errors += [
                f"{doc['kind']}/{doc['metadata']['name']}: {e.json_path}: {e.message}"
                for e in validator.iter_errors(doc)
            ]
            continue
        error = k8s_errors(doc, version)  # a kind without a schema raises: it fails too
        if error is not None:
            errors.append(error)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_secret_example_is_a_valid_secret_named_as_the_deployments_expect(
    version: str,
) -> None:
    secret = secret_example()
    assert k8s_errors(secret, version) is None
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == NAME
    assert "REDIS_URL" in secret["stringData"]


def test_the_validators_reject_a_misspelled_field() -> None:
    """The checks above can fail: strict schemas refuse what the API server would drop."""
    deployment = one(rendered("base"), "Deployment", API)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    assert k8s_errors(broken, KUBERNETES_VERSIONS[-1]) is not None

    scaled = one(rendered("keda"), "ScaledObject", PROJECTOR)
    validator = scaled_object_validator()
    assert not list(validator.iter_errors(scaled))
    typo = json.loads(json.dumps(scaled))
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    assert list(validator.iter_errors(typo))
    not_a_string = json.loads(json.dumps(scaled))
    not_a_string["spec"]["triggers"][0]["metadata"]["allowIdleConsumers"] = False
    assert list(validator.iter_errors(not_a_string))


def test_the_base_holds_every_object_of_the_service_and_no_secret() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered("base"))
    assert kinds == sorted(
        [
            ("ConfigMap", NAME),
            ("Deployment", API),
            ("Deployment", PROJECTOR),
            ("HorizontalPodAutoscaler", API),
            ("PodDisruptionBudget", API),
            ("PodDisruptionBudget", PROJECTOR),
            ("Service", API),
            ("ServiceAccount", NAME),
        ]
    )
    for variant in VARIANTS:
        assert all(d["kind"] != "Secret" for d in rendered(variant)), variant


def test_the_secret_example_is_outside_every_kustomization_and_holds_no_jwt_key() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        # The parsed file, without its comments (which may well mention the example).
        entries = json.dumps(yaml.safe_load(kustomization.read_text()))
        assert "secret.example" not in entries, kustomization
    # A known HS256 key in a shipped file would let anyone mint tokens for any tenant.
    assert "JWT_SECRET" not in secret_example()["stringData"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_is_labelled_part_of_the_service(variant: str) -> None:
    for doc in rendered(variant):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == NAME, doc["metadata"]["name"]
    for deployment in deployments(rendered(variant)):
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["app.kubernetes.io/part-of"] == NAME
        # Selectors are immutable: the kustomize label must not have been added to them.
        assert "app.kubernetes.io/part-of" not in deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_runs_as_non_root_on_a_read_only_filesystem(variant: str) -> None:
    for deployment in deployments(rendered(variant)):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == UID
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in containers(deployment):
            context = container["securityContext"]
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert context["runAsNonRoot"] is True, where
            assert context["runAsUser"] == UID, where
            assert context["runAsGroup"] == UID, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert context["seccompProfile"]["type"] == "RuntimeDefault", where
            assert container["image"] == IMAGE, where


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_has_cpu_and_memory_requests_and_limits(variant: str) -> None:
    for deployment in deployments(rendered(variant)):
        for container in containers(deployment):
            resources = container["resources"]
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources[bound], f"{container['name']}: {bound}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_ask_healthz_for_liveness_and_readyz_for_readiness_on_a_declared_port(
    variant: str,
) -> None:
    for deployment in deployments(rendered(variant)):
        for container in containers(deployment):
            ports = {p["name"] for p in container["ports"]} | {
                p["containerPort"] for p in container["ports"]
            }
            probes = {
                "livenessProbe": "/healthz",
                "readinessProbe": "/readyz",
                "startupProbe": "/healthz",
            }
            for probe, path in probes.items():
                if probe == "startupProbe" and probe not in container:
                    continue
                get = container[probe]["httpGet"]
                assert get["path"] == path, f"{container['name']}: {probe}"
                assert get["port"] in ports, f"{container['name']}: {probe}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_reads_the_configmap_and_the_required_secret_and_writes_only_tmp(
    variant: str,
) -> None:
    docs = rendered(variant)
    one(docs, "ConfigMap", NAME)
    for deployment in deployments(docs):
        pod = deployment["spec"]["template"]["spec"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        assert set(empty_dirs) == {v["name"] for v in pod["volumes"]}
        for container in containers(deployment):
            sources = container["envFrom"]
            assert {"configMapRef": {"name": NAME}} in sources
            assert {"secretRef": {"name": NAME, "optional": False}} in sources
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get(TMP) in empty_dirs, container["name"]
            assert set(mounts.values()) <= empty_dirs


def test_the_api_has_a_writable_prometheus_multiprocess_directory() -> None:
    api = one(rendered("base"), "Deployment", API)
    (container,) = api["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts
    assert env["API_HOST"] == "0.0.0.0"


def test_the_service_hpa_and_budgets_point_at_the_right_pods() -> None:
    docs = rendered("base")
    api = one(docs, "Deployment", API)
    projector = one(docs, "Deployment", PROJECTOR)
    api_pods = api["spec"]["template"]["metadata"]["labels"]
    (api_container,) = api["spec"]["template"]["spec"]["containers"]

    service = one(docs, "Service", API)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= api_pods.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    (http,) = [p for p in api_container["ports"] if p["name"] == port["targetPort"]]
    assert http["containerPort"] == 8000

    hpa = one(docs, "HorizontalPodAutoscaler", API)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": API,
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # The HPA owns the api's count: a fixed one would be re-applied on every deploy.
    assert "replicas" not in api["spec"]

    for deployment, budget in ((api, "minAvailable"), (projector, "maxUnavailable")):
        pdb = one(docs, "PodDisruptionBudget", deployment["metadata"]["name"])
        assert pdb["spec"][budget] == 1
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pods.items()

    assert api["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert projector["spec"]["replicas"] == 2


def test_keda_scales_the_projector_to_at_most_one_replica_per_partition() -> None:
    docs = rendered("keda")
    scaled = one(docs, "ScaledObject", PROJECTOR)["spec"]
    assert scaled["scaleTargetRef"]["name"] == PROJECTOR
    one(docs, "Deployment", PROJECTOR)
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= PARTITIONS
    # KEDA owns the count: the base's fixed replicas are removed.
    assert "replicas" not in one(docs, "Deployment", PROJECTOR)["spec"]

    config = one(docs, "ConfigMap", NAME)["data"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    # The lag KEDA reads is the lag of the group the projector consumes in.
    assert metadata["consumerGroup"] == f"{config['KAFKA_GROUP_ID']}.{config['PROJECTION_VERSION']}"
    assert metadata["topic"] == config["KAFKA_TOPIC"]
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert metadata["allowIdleConsumers"] == "false"


@pytest.mark.parametrize(
    ("process", "deployment"),
    [(ApiSettings, API), (ProjectorSettings, PROJECTOR)],
    ids=["api", "projector"],
)
def test_the_processes_accept_their_environment_from_the_manifests_and_secret_example(
    monkeypatch: pytest.MonkeyPatch,
    process: type[ApiSettings | ProjectorSettings],
    deployment: str,
) -> None:
    """An empty or contradictory value (KAFKA_SASL_MECHANISM="", JWT_SECRET beside a JWKS
    URL) would stop the pods at start; the settings classes are the judges of that."""
    for field in process.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    docs = rendered("base")
    (container,) = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    environment = {
        **one(docs, "ConfigMap", NAME)["data"],
        **secret_example()["stringData"],
        **{e["name"]: e["value"] for e in container["env"]},  # `env` wins over `envFrom`
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    process()
