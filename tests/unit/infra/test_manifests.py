"""Kubernetes manifests in infra/: schema-valid, consistent with each other, no inline secrets.

Core kinds are checked with kubernetes-validate's bundled (strict) Kubernetes schemas; the KubeRay
kinds with our own JSON schema in schemas/kuberay.schema.json, and every pod template inside them
again as a Kubernetes PodTemplate.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
KUBERAY_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "kuberay.schema.json").read_text())
K8S_VERSION = "1.33"
RAY_FILES = (
    "raycluster.yaml",
    "rayjob-label.yaml",
    "raycronjob-label.yaml",
    "rayservice-serve.yaml",
)
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)


def _load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((INFRA / name).read_text()) if doc]


def _manifest_files() -> list[str]:
    return sorted(p.name for p in INFRA.glob("*.yaml") if p.name != "kustomization.yaml")


def _one(name: str, kind: str) -> dict:
    (doc,) = [d for d in _load(name) if d["kind"] == kind]
    return doc


def _validate_kuberay(doc: dict) -> None:
    schema = {"$defs": KUBERAY_SCHEMA["$defs"], "$ref": f"#/$defs/{doc['kind']}"}
    jsonschema.Draft202012Validator(schema).validate(doc)


def _validate_core(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    if doc["kind"] == "RayCronJob":
        spec = spec["jobTemplate"]
    if doc["kind"] == "RayService":
        return spec["rayClusterConfig"]
    return spec.get("rayClusterSpec", spec)


def _pod_templates(doc: dict) -> Iterator[dict]:
    if doc["kind"] in ("RayCluster", "RayJob", "RayCronJob", "RayService"):
        cluster = _cluster_spec(doc)
        yield cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield group["template"]
    elif doc["kind"] == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]


def _containers(doc: dict) -> Iterator[dict]:
    for template in _pod_templates(doc):
        yield from template["spec"]["containers"]


def _all_docs() -> list[dict]:
    return [doc for name in _manifest_files() for doc in _load(name)]


@pytest.mark.parametrize("name", _manifest_files())
def test_manifest_validates(name: str) -> None:
    docs = _load(name)
    assert docs, f"{name} holds no documents"
    for doc in docs:
        if doc["apiVersion"].startswith("ray.io/"):
            _validate_kuberay(doc)
            for template in _pod_templates(doc):
                _validate_core(
                    {
                        "apiVersion": "v1",
                        "kind": "PodTemplate",
                        "metadata": {"name": "t"},
                        "template": template,
                    }
                )
        else:
            _validate_core(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "shutdownAfterJobFinish"), True),  # misspelt field
        (("spec", "ttlSecondsAfterFinished"), "600"),  # wrong type
        (("spec", "rayClusterSpec", "workerGroupSpecs", 0, "maxReplicas"), -1),
        (("spec", "submissionMode"), "K8sJob"),
        (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParams", "num-cpus"), 0),
    ],
)
def test_kuberay_schema_rejects_broken_rayjob(path: tuple, value: object) -> None:
    doc = copy.deepcopy(_one("rayjob-label.yaml", "RayJob"))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _validate_kuberay(doc)


def test_kuberay_schema_requires_head_and_schedule() -> None:
    cluster = copy.deepcopy(_one("raycluster.yaml", "RayCluster"))
    del cluster["spec"]["headGroupSpec"]
    with pytest.raises(jsonschema.ValidationError, match="headGroupSpec"):
        _validate_kuberay(cluster)
    cron = copy.deepcopy(_one("raycronjob-label.yaml", "RayCronJob"))
    cron["spec"]["schedule"] = "daily"
    with pytest.raises(jsonschema.ValidationError):
        _validate_kuberay(cron)


def test_core_schema_rejects_misspelt_cronjob_field() -> None:
    cron = copy.deepcopy(_one("cron-label.yaml", "CronJob"))
    cron["spec"]["concurrency"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_core(cron)


def test_cluster_specs_are_identical() -> None:
    cluster = _one("raycluster.yaml", "RayCluster")["spec"]
    job = _one("rayjob-label.yaml", "RayJob")["spec"]
    cron = _one("raycronjob-label.yaml", "RayCronJob")["spec"]
    assert job["rayClusterSpec"] == cluster
    assert cron["jobTemplate"] == job


def test_rayjob_cleans_up_and_runs_the_entrypoint() -> None:
    doc = _one("rayjob-label.yaml", "RayJob")
    spec = doc["spec"]
    # a fixed name: creating a second run fails while one exists, so scheduled runs never overlap
    assert doc["metadata"]["name"] == "zegclip-label" and "generateName" not in doc["metadata"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert 0 < spec["ttlSecondsAfterFinished"] <= 3600
    assert 0 < spec["activeDeadlineSeconds"] < 24 * 3600  # ends before the next daily run
    assert spec["entrypoint"] == "bash /app/infra/label-entrypoint.sh"
    assert (INFRA / "label-entrypoint.sh").is_file()


def test_cpu_head_and_autoscaling_gpu_workers() -> None:
    spec = _one("raycluster.yaml", "RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_resources = head["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in head_resources["limits"]
    (gpu,) = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert gpu["maxReplicas"] >= 1
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    volumes = {v["name"]: v for v in gpu["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"  # object store in /dev/shm


def test_ray_version_and_image_match_everywhere() -> None:
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    images = set()
    for name in RAY_FILES:
        doc = _one(name, _load(name)[0]["kind"])
        assert _cluster_spec(doc)["rayVersion"] == pins["ray"]
        images |= {c["image"] for c in _containers(doc)}
    assert len(images) == 1, f"driver and workers must share one image: {images}"
    (image,) = images
    assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest")


def test_parameters_live_in_one_configmap() -> None:
    params = _one("params.yaml", "ConfigMap")
    assert params["metadata"]["name"] == "label-job-params"
    script = (INFRA / "label-entrypoint.sh").read_text()
    required = re.search(r"for name in ([A-Z_ ]+); do require", script).group(1).split()
    assert set(required) == {"INPUT_PREFIX", "OUTPUT_PREFIX", "VOCABULARY"}
    assert set(required) | {"CHECKPOINT", "CLIP_WEIGHTS"} <= set(params["data"])
    for name in RAY_FILES:
        doc = _one(name, _load(name)[0]["kind"])
        head = _cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": "label-job-params"}} in head["envFrom"]
    values = [v for v in params["data"].values() if v.startswith(("s3://", "gs://", "http"))]
    for other in INFRA.iterdir():
        if other.suffix in (".yaml", ".sh", ".md") and other.name != "params.yaml":
            text = other.read_text()
            assert not [v for v in values if v in text], f"{other.name} repeats a parameter"


def _env_entries(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_entries(item)


def test_no_credentials_inline() -> None:
    docs = _all_docs()
    assert not [d for d in docs if d["kind"] == "Secret"]
    secret_env = [e for d in docs for e in _env_entries(d) if SECRET_NAME.search(e["name"])]
    assert secret_env, "expected the optional S3 Secret references"
    for entry in secret_env:
        assert "value" not in entry, f"inline credential {entry['name']}"
        assert "secretKeyRef" in entry["valueFrom"], entry
    params = _one("params.yaml", "ConfigMap")["data"]
    assert not [key for key in params if SECRET_NAME.search(key)]
    for path in INFRA.iterdir():
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", text), path.name


def test_ray_pods_use_platform_identity() -> None:
    account = _one("serviceaccount.yaml", "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    for name in RAY_FILES:
        doc = _one(name, _load(name)[0]["kind"])
        for template in _pod_templates(doc):
            assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
            assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    role = _one("serviceaccount.yaml", "Role")
    rayclusters = [r for r in role["rules"] if r["resources"] == ["rayclusters"]]
    assert rayclusters and set(rayclusters[0]["verbs"]) == {"get", "patch"}  # autoscaler


def test_cron_creates_rayjob_with_least_privilege() -> None:
    cron = _one("cron-label.yaml", "CronJob")
    role = _one("cron-label.yaml", "Role")
    binding = _one("cron-label.yaml", "RoleBinding")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"]}]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert (
        cron["spec"]["schedule"] == _one("raycronjob-label.yaml", "RayCronJob")["spec"]["schedule"]
    )

    (container,) = pod["containers"]
    assert container["command"] + container["args"] == [
        "kubectl",
        "create",
        "-f",
        "/templates/rayjob-label.yaml",
    ]
    (volume,) = pod["volumes"]
    kustomization = yaml.safe_load((INFRA / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert volume["configMap"]["name"] == generator["name"]
    assert generator["files"] == ["rayjob-label.yaml"]
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True


def test_kustomization_lists_existing_core_manifests() -> None:
    kustomization = yaml.safe_load((INFRA / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert set(resources) == {"params.yaml", "serviceaccount.yaml", "cron-label.yaml"}
    for name in resources:
        assert (INFRA / name).is_file()
        assert all(not d["apiVersion"].startswith("ray.io/") for d in _load(name))


def test_rayservice_runs_the_serve_app_with_valid_flags(monkeypatch) -> None:
    from jobs.serve import build_parser
    from pipeline.serve import deployment

    doc = _one("rayservice-serve.yaml", "RayService")
    (app,) = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    module, name = app["import_path"].split(":")
    assert module == deployment.__name__ and callable(getattr(deployment, name))
    assert app["route_prefix"] == "/"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in app["args"].items()]
    build_parser().parse_args(flags)  # every arg is a jobs/serve.py flag of the right type
    cluster = _cluster_spec(doc)
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": 8000, "name": "serve"} in head["ports"]
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] >= 1  # a warm replica for annotators
    assert (
        gpu["maxReplicas"] * 1 >= app["args"]["num_replicas"] * app["args"]["num_gpus_per_replica"]
    )
    env = {e["name"]: e["valueFrom"] for e in gpu["template"]["spec"]["containers"][0]["env"]}
    assert env["LABEL_STUDIO_API_KEY"]["secretKeyRef"]["name"] == "label-studio-api-key"
    assert env["LABEL_STUDIO_URL"]["configMapKeyRef"]["name"] == "label-job-params"
    assert "LABEL_STUDIO_URL" in _one("params.yaml", "ConfigMap")["data"]
    assert set(deployment.ENV_FLAGS.values()) <= set(_one("params.yaml", "ConfigMap")["data"])


def test_kuberay_schema_rejects_broken_rayservice() -> None:
    doc = copy.deepcopy(_one("rayservice-serve.yaml", "RayService"))
    doc["spec"]["serveConfigV2"] = {"applications": []}  # must be a YAML string
    with pytest.raises(jsonschema.ValidationError):
        _validate_kuberay(doc)
    doc = copy.deepcopy(_one("rayservice-serve.yaml", "RayService"))
    doc["spec"]["upgradeStrategy"]["type"] = "BlueGreen"
    with pytest.raises(jsonschema.ValidationError):
        _validate_kuberay(doc)
