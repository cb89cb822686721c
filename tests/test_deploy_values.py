"""deploy/k8s/values.yaml: the example values for Dagster's Helm chart, checked without a cluster.

There is no Helm or Kubernetes here, so the chart is not rendered. What can be checked is: the MMFS
settings it sets are real ones, no credential is written in it, the Secrets it mounts are the ones the
step Jobs are told about, the run launcher's config (as the chart hands it to dagster-k8s) passes
K8sRunLauncher's config schema, and the code location validates with the user deployment's environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from mmfs_assets.settings import ENV_NAMES, is_secret_option
from tests.dagster_server import ROOT

VALUES = ROOT / "deploy" / "k8s" / "values.yaml"
K8S_SETTINGS = {"MMFS_K8S_IMAGE", "MMFS_K8S_NAMESPACE", "MMFS_K8S_ENV_SECRETS", "MMFS_K8S_GPU_NODE_SELECTOR"}


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _deployment_env(values: dict) -> dict[str, str]:
    (dep,) = values["dagster-user-deployments"]["deployments"]
    return {e["name"]: str(e["value"]) for e in dep["env"]}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _snake_keys(value):
    if isinstance(value, dict):
        return {_snake(k): _snake_keys(v) for k, v in value.items()}
    return [_snake_keys(v) for v in value] if isinstance(value, list) else value


def test_values_set_known_settings_and_no_secret():
    values = _values()
    env = _deployment_env(values)
    assert set(env) <= set(ENV_NAMES.values()) | K8S_SETTINGS, set(env) - set(ENV_NAMES.values()) - K8S_SETTINGS
    assert env["MMFS_EXECUTOR"] == "k8s" and env["MMFS_DROP_DIR"].startswith("s3://")
    assert "MMFS_STORAGE_OPTIONS" not in env  # credentials come from the Secret, never from this file
    text = VALUES.read_text()
    for name, value in env.items():  # (MMFS_K8S_ENV_SECRETS names Secrets, it holds none)
        assert name == "MMFS_K8S_ENV_SECRETS" or not is_secret_option(name, value), name
    assert not re.search(r"AKIA[0-9A-Z]{12,}", text)
    assert not re.search(r'(secret_access_key|session_token)"\s*:\s*"(?!\.\.\.")', text)  # only placeholders
    # the Secret every process mounts is the one the step Jobs are told to mount
    secrets = {s["name"] for s in values["dagster-user-deployments"]["deployments"][0]["envSecrets"]}
    assert set(env["MMFS_K8S_ENV_SECRETS"].split(",")) == secrets
    assert {s["name"] for s in values["dagsterDaemon"]["envSecrets"]} == secrets
    assert {s["name"] for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]} == secrets
    image = values["dagster-user-deployments"]["deployments"][0]["image"]
    assert env["MMFS_K8S_IMAGE"] == f"{image['repository']}:{image['tag']}"  # steps run the deployment's image


def test_run_launcher_config_passes_the_dagster_k8s_schema():
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    values = _values()
    cfg = _snake_keys(values["runLauncher"]["config"]["k8sRunLauncher"])
    cfg["env_secrets"] = [s["name"] for s in cfg["env_secrets"]]
    # what the chart adds itself: its instance ConfigMap, the Postgres Secret, the service account
    cfg.update(instance_config_map="mmfs-dagster-instance",
               postgres_password_secret=values["global"]["postgresqlSecretName"],
               service_account_name=values["global"]["serviceAccountName"])
    result = process_config(K8sRunLauncher.config_type(), cfg)
    assert result.success, [e.message for e in result.errors]


def test_the_code_location_validates_with_the_deployment_env():
    env = {**os.environ, **_deployment_env(_values())}
    env.pop("DAGSTER_HOME", None)
    r = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m", "mmfs_assets.definitions"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Validation successful" in r.stderr + r.stdout, r.stderr[-3000:]
