"""deploy/kuberay/: the RayCluster of MMFS_FILL_ENGINE=ray and its NetworkPolicy, checked without a cluster.

There is no Kubernetes or KubeRay operator here, so nothing is applied. What can be checked, as
tests/test_deploy_values.py does for the Helm values: the RayCluster uses only fields of KubeRay's ray.io/v1
CRD (v1.6.2) with the types it declares, its pod templates and the NetworkPolicies load as the Kubernetes
API's own models (unknown keys and missing names rejected), the GPU group gives Ray as many GPUs as the pod
gets, the MMFS settings are real ones, no credential is written in either file, the image and the storage
Secret are the Helm values' ones, /dev/shm is a memory volume, and the dashboard stays off the pod's
interfaces.
"""

from __future__ import annotations

import re
import tomllib

import kubernetes.client as k8s
import yaml
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

from mmfs_assets.settings import ENV_NAMES, STORAGE_OPTIONS_ENV, Settings, is_secret_option
from tests.dagster_server import ROOT

RAYCLUSTER = ROOT / "deploy" / "kuberay" / "raycluster.yaml"
NETWORK_POLICY = ROOT / "deploy" / "kuberay" / "networkpolicy.yaml"
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"
RAY_DOC = ROOT / "docs" / "ray.md"

# Fields of KubeRay's RayCluster CRD, ray.io/v1 (ray-operator/config/crd/bases/ray.io_rayclusters.yaml,
# v1.6.2): what the API server accepts at each level, and what it requires.
SPEC_FIELDS = {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
               "headGroupSpec", "headServiceAnnotations", "managedBy", "rayVersion", "suspend", "upgradeStrategy",
               "workerGroupSpecs"}
HEAD_FIELDS = {"enableIngress", "headService", "labels", "rayStartParams", "resources", "serviceType", "template"}
WORKER_FIELDS = {"groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas", "numOfHosts",
                 "rayStartParams", "replicas", "resources", "scaleStrategy", "suspend", "template"}
WORKER_REQUIRED = {"groupName", "maxReplicas", "minReplicas", "template"}
AUTH_FIELDS = {"enableK8sTokenAuth", "mode", "secretName"}
GPU = "nvidia.com/gpu"
# env names that hold a credential whatever is_secret_option says of them
SECRET_ENV = {STORAGE_OPTIONS_ENV, "RAY_AUTH_TOKEN"}
# MMFS_* read outside Settings: mmfs_assets/__init__.py (whether models may be downloaded)
OTHER_MMFS_ENV = {"MMFS_MODEL_DOWNLOAD"}


def _cluster() -> dict:
    (doc,) = [d for d in yaml.safe_load_all(RAYCLUSTER.read_text()) if d]
    return doc


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _code_location() -> dict:
    (dep,) = _values()["dagster-user-deployments"]["deployments"]
    return dep


def _groups(cluster: dict) -> list[tuple[str, dict]]:
    spec = cluster["spec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


def _ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay runs Ray in the first container


def _containers(cluster: dict):
    for name, group in _groups(cluster):
        pod = group["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            yield name, c


def _literal_env(container: dict) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def _ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    (pin,) = [m.group(2) for d in deps if (m := re.fullmatch(r"ray(\[[\w,\s-]*\])?==([\w.]+)", d.strip()))]
    return pin


def test_raycluster_uses_kuberays_fields_and_kubernetes_pod_templates():
    cluster = _cluster()
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    name = cluster["metadata"]["name"]
    # KubeRay: a DNS-1035 label of at most 53 characters (its Services and pods are named after it)
    assert len(name) <= 53 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    spec = cluster["spec"]
    assert set(spec) <= SPEC_FIELDS, set(spec) - SPEC_FIELDS
    assert set(spec["headGroupSpec"]) <= HEAD_FIELDS and "template" in spec["headGroupSpec"]
    assert spec["workerGroupSpecs"], "no worker group: the head runs no actor"
    for group in spec["workerGroupSpecs"]:
        assert WORKER_REQUIRED <= set(group) <= WORKER_FIELDS, set(group) ^ WORKER_REQUIRED
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
    names = [n for n, _ in _groups(cluster)]
    assert len(names) == len(set(names)), names
    for gname, group in _groups(cluster):
        params = group.get("rayStartParams", {})
        # the CRD's rayStartParams is a map of strings: an unquoted 8 is refused by the API server
        assert all(isinstance(v, str) for v in params.values()), (gname, params)
        # KubeRay refuses resources set both as `ray start` flags and in the group's `resources`
        assert not (group.get("resources") and {"num-cpus", "num-gpus", "memory", "resources"} & set(params)), gname
        # the pod template as the Kubernetes API reads it: unknown keys and missing names fail here
        template = k8s_model_from_dict(k8s.V1PodTemplateSpec, k8s_snake_case_dict(k8s.V1PodTemplateSpec, group["template"]))
        assert template.spec.containers[0].image, gname
    # Ray 2.60 is what the image installs (the `ray` extra): Ray Client needs the same version on both sides
    assert spec["rayVersion"] == _ray_pin()
    # the autoscaler sidecar would need the head's service account token, which the pods do not mount
    assert not spec.get("enableInTreeAutoscaling")


def test_token_authentication_is_on():
    cluster = _cluster()
    auth = cluster["spec"]["authOptions"]
    assert set(auth) <= AUTH_FIELDS and auth["mode"] == "token", auth
    # `ray start` (what KubeRay runs) leaves authentication off unless told: KubeRay sets RAY_AUTH_MODE=token
    # and RAY_AUTH_TOKEN from this Secret's `auth_token` in every Ray container (Ray >= 2.52)
    assert tuple(int(x) for x in cluster["spec"]["rayVersion"].split(".")[:2]) >= (2, 52)
    secret = auth["secretName"]
    header = RAYCLUSTER.read_text()
    assert f"create secret generic {secret} --from-literal=auth_token=" in header  # how to make it
    assert "RAY_AUTH_TOKEN=" in header and "RAY_AUTH_MODE=token" in header  # ... and give it to Dagster's pods


def test_a_gpu_worker_group_gives_ray_the_pods_gpus_and_the_head_runs_no_actor():
    cluster = _cluster()
    gpu_groups = []
    for name, group in _groups(cluster):
        res = _ray_container(group).get("resources", {})
        limit = res.get("limits", {}).get(GPU)
        params = group.get("rayStartParams", {})
        if name == "head":
            assert limit is None and params.get("num-gpus", "0") == "0"
            assert params.get("num-cpus") == "0", "actors on the head would have no storage credentials"
            continue
        if limit is None:
            continue
        gpu_groups.append(name)
        assert str(res.get("requests", {}).get(GPU, limit)) == str(limit), "extended resources: requests = limits"
        assert params.get("num-gpus") == str(limit), (name, params.get("num-gpus"), limit)
    assert gpu_groups, "no worker group with nvidia.com/gpu"


def test_gpu_workers_run_on_the_gpu_nodes_of_the_helm_values():
    cluster = _cluster()
    env = {e["name"]: str(e["value"]) for e in _code_location()["env"]}
    key, _, value = env["MMFS_K8S_GPU_NODE_SELECTOR"].partition("=")
    for group in cluster["spec"]["workerGroupSpecs"]:
        if GPU in _ray_container(group).get("resources", {}).get("limits", {}):
            assert group["template"]["spec"].get("nodeSelector", {}).get(key) == value, group["groupName"]


def test_env_names_are_real_settings_and_no_literal_secret():
    cluster = _cluster()
    real = set(ENV_NAMES.values()) | {STORAGE_OPTIONS_ENV} | OTHER_MMFS_ENV
    secret_refs = {}
    for group, c in _containers(cluster):
        names = [e["name"] for e in c.get("env", [])]
        assert len(names) == len(set(names)), (group, names)  # a repeated name: the last one wins, silently
        for e in c.get("env", []):
            name = e["name"]
            if name.startswith("MMFS_"):  # a real setting, or one Settings reads per feature (MMFS_CLIP_MODEL...)
                assert name in real or name in Settings.from_env({name: "x"}).feature_env, (group, name)
            if name in SECRET_ENV or is_secret_option(name, str(e.get("value", ""))):
                assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), (group, name)
                secret_refs[(group, name)] = e["valueFrom"]["secretKeyRef"]
        # what is written in the file is valid for the settings (types, choices)
        Settings.from_env(_literal_env(c))
        for src in c.get("envFrom", []):
            assert set(src) <= {"secretRef", "configMapRef", "prefix"}, src
    text = RAYCLUSTER.read_text() + NETWORK_POLICY.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{12,}", text)
    assert not re.search(r'(secret_access_key|session_token)"\s*:\s*"(?!\.\.\.")', text)  # only placeholders
    for path in (RAYCLUSTER, NETWORK_POLICY):
        assert not [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Secret"], path

    # the storage credentials: in the worker pods only, from the Secret the Dagster pods mount
    storage = {g: ref for (g, name), ref in secret_refs.items() if name == STORAGE_OPTIONS_ENV}
    workers = {g for g, grp in _groups(cluster) if g != "head"}
    assert set(storage) == workers, storage
    mounted = {s["name"] for s in _code_location()["envSecrets"]}
    for ref in storage.values():
        assert ref["name"] in mounted and ref["key"] == STORAGE_OPTIONS_ENV, ref


def test_same_image_and_models_as_the_code_location():
    cluster = _cluster()
    dep = _code_location()
    image = f"{dep['image']['repository']}:{dep['image']['tag']}"
    for group, c in _containers(cluster):
        # actors import mmfs_assets (and unpickle what the Dagster step sends) from this image
        assert c["image"] == image, (group, c["image"], image)
    # the step sends its MMFS_MODEL_DIR with each fill: the workers must have the weights at that path, and
    # their Hugging Face cache (HF_HOME, read by the actor itself) on a volume too
    model_dir = {e["name"]: str(e["value"]) for e in dep["env"]}["MMFS_MODEL_DIR"]
    for name, group in _groups(cluster):
        if name == "head":
            continue
        c = _ray_container(group)
        mounts = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts", [])]

        def on_volume(path: str) -> bool:
            return any(path == m or path.startswith(m + "/") for m in mounts)  # noqa: B023 - used at once

        assert on_volume(model_dir), f"{name}: no volume at the step's MMFS_MODEL_DIR {model_dir} ({mounts})"
        hf_home = _literal_env(c).get("HF_HOME")
        assert hf_home is None or on_volume(hf_home), (name, hf_home)


def test_dev_shm_is_a_memory_volume_in_every_ray_pod():
    for name, group in _groups(_cluster()):
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        (mount,) = [m for m in _ray_container(group).get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
        assert volumes[mount["name"]].get("emptyDir", {}).get("medium") == "Memory", name


def test_the_dashboard_is_not_on_the_pods_interfaces():
    cluster = _cluster()
    head = cluster["spec"]["headGroupSpec"]
    # KubeRay sets dashboard-host 0.0.0.0 when it is absent: it must be given, and be the loopback
    assert head["rayStartParams"].get("dashboard-host") in {"127.0.0.1", "localhost"}
    for name, group in _groups(cluster):
        for key, value in group.get("rayStartParams", {}).items():
            assert not (key.endswith("host") and value in {"0.0.0.0", "::"}), (name, key)
        for c in group["template"]["spec"]["containers"]:
            for p in c.get("ports", []):  # the head Service publishes the head container's ports
                assert p["containerPort"] != 8265 and p.get("name") != "dashboard", (name, p)
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress")
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"


def test_network_policies_keep_ray_to_its_pods_and_the_client_port_to_dagster():
    cluster = _cluster()
    name = cluster["metadata"]["name"]
    head = _ray_container(cluster["spec"]["headGroupSpec"])
    (client_port,) = [p["containerPort"] for p in head["ports"] if p.get("name") == "client"]
    policies = [d for d in yaml.safe_load_all(NETWORK_POLICY.read_text()) if d]
    assert policies
    allowed_ports = set()
    for doc in policies:
        policy = k8s_model_from_dict(k8s.V1NetworkPolicy, k8s_snake_case_dict(k8s.V1NetworkPolicy, doc))
        assert policy.metadata.namespace == cluster["metadata"]["namespace"]
        assert policy.spec.pod_selector.match_labels["ray.io/cluster"] == name
        assert policy.spec.policy_types == ["Ingress"]
        for rule in policy.spec.ingress:
            for peer in rule._from:
                # never open to every address, namespace or pod
                assert peer.ip_block is None and peer.namespace_selector is None, peer
                assert peer.pod_selector is not None and peer.pod_selector.match_labels, peer
                if peer.pod_selector.match_labels.get("ray.io/cluster") != name:  # from outside the cluster
                    assert policy.spec.pod_selector.match_labels.get("ray.io/node-type") == "head"
                    allowed_ports |= {p.port for p in rule.ports or [None]}
    assert allowed_ports == {client_port}, allowed_ports


def test_the_guide_names_the_head_service():
    cluster = _cluster()
    head = _ray_container(cluster["spec"]["headGroupSpec"])
    (client_port,) = [p["containerPort"] for p in head["ports"] if p.get("name") == "client"]
    doc = RAY_DOC.read_text()
    assert f"ray://{cluster['metadata']['name']}-head-svc" in doc and f":{client_port}" in doc
    assert "deploy/kuberay/raycluster.yaml" in doc
