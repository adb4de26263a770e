"""The deployment files under deploy/: Helm values for Dagster's chart, the user-code Dockerfile, the shared
volume's manifest and the example platform config.

Nothing here needs a cluster, Docker, Helm or the network. What runs depends on what is installed:

* always (PyYAML, stdlib): every YAML file parses; the Dockerfile's pins equal pyproject.toml's and
  scripts/setup.sh's; the image serves workspace.yaml's module; GPU pods get a GPU limit, a node selector
  and a toleration; the shared volume reaches every pod; the values use only keys the chart's schema
  declares (a walk of the vendored ``values.schema.json``, which catches typos the chart would ignore);
* with ``jsonschema``: full validation of the values against the chart's vendored JSON schema, the
  Kubernetes objects inside them against ``kubernetes-validate``'s bundled Kubernetes definitions when that
  package is installed (otherwise those references are treated as "any object");
* with ``kubernetes-validate``: the shared volume's PersistentVolumeClaim against the Kubernetes schema;
* with the package importable: the example platform config through ``load_config``.

Every checker returns a list of problems, and ``test_checkers_reject_broken_values`` feeds each one a
broken copy of the values, so a checker that can no longer fail is noticed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
VALUES = K8S / "values.yaml"
CELERY_VALUES = K8S / "values-celery-k8s.yaml"
SHARED_PVC = K8S / "shared-pvc.yaml"
PLATFORM_EXAMPLE = K8S / "platform-config.example.yaml"
CHART_SCHEMA = K8S / "chart-schema" / "values.schema.json"
# sha256 of the vendored schema as copied (deploy/k8s/README.md says from where): an edit shows up here.
CHART_SCHEMA_SHA256 = "cccbf9a9956cf32b240ef7fc2f4735e03c02db369f15ff444b06492544f8503a"
GPU = "nvidia.com/gpu"
USER_DEPLOYMENTS = "dagster-user-deployments"


# ---------------------------------------------------------------------------------------------- readers


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _merge(base: Any, overlay: Any) -> Any:
    """Helm's merge of values files: maps merge key by key, anything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return overlay


def _values() -> dict:
    return _load(VALUES)


def _celery_values() -> dict:
    return _merge(_values(), _load(CELERY_VALUES))


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _setup_pins() -> dict[str, str]:
    """The --no-deps installs of scripts/setup.sh (cuCIM, MOOZY)."""
    script = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    return {name.lower(): version for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.\-]+)", script)}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def _dockerfile_args() -> dict[str, str]:
    args = {}
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def _dockerfile_exec_form(keyword: str) -> list[str] | None:
    found = [rest for kw, rest in _dockerfile_instructions() if kw == keyword]
    assert len(found) <= 1, f"more than one {keyword} in {DOCKERFILE}"
    return json.loads(found[0]) if found else None


def _pip_requirements() -> list[str]:
    """Every requirement the Dockerfile's RUN lines pass to `pip install`, with ARGs substituted."""
    args = _dockerfile_args()
    requirements = []
    for keyword, rest in _dockerfile_instructions():
        if keyword != "RUN":
            continue
        for command in rest.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                requirements += [word for word in words[2:] if not word.startswith("-")]
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], requirement) for requirement in requirements]


def _workspace_module() -> str:
    workspace = _load(ROOT / "workspace.yaml")
    [entry] = workspace["load_from"]
    return entry["python_module"]["module_name"]


def _user_deployment(values: dict) -> dict:
    [deployment] = values[USER_DEPLOYMENTS]["deployments"]
    return deployment


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def _under(path: str | Path, root: str | Path) -> bool:
    return Path(path) == Path(root) or Path(root) in Path(path).parents


# --------------------------------------------------------------------------------------------- checkers


def gpu_pod_problems(values: dict) -> list[str]:
    """The run pods of the K8sRunLauncher values get one GPU, a GPU node selector and the GPU toleration."""
    launcher = values["runLauncher"]
    if launcher["type"] != "K8sRunLauncher":
        return [f"runLauncher.type is {launcher['type']!r}, not K8sRunLauncher"]
    run_config = (launcher["config"]["k8sRunLauncher"] or {}).get("runK8sConfig") or {}
    problems = []
    limits = (((run_config.get("containerConfig") or {}).get("resources") or {}).get("limits")) or {}
    if not isinstance(limits.get(GPU), int) or limits[GPU] < 1:
        problems.append(f"runK8sConfig.containerConfig.resources.limits[{GPU}] is {limits.get(GPU)!r}, not >= 1")
    pod_spec = run_config.get("podSpecConfig") or {}
    if not pod_spec.get("nodeSelector"):
        problems.append("runK8sConfig.podSpecConfig.nodeSelector is empty: run pods may land on CPU nodes")
    tolerations = pod_spec.get("tolerations") or []
    if not any(t.get("key") == GPU and t.get("effect") in ("NoSchedule", None) for t in tolerations):
        problems.append(f"runK8sConfig.podSpecConfig.tolerations has no toleration of the {GPU} taint")
    return problems


def celery_queue_problems(values: dict) -> list[str]:
    """The Celery-K8s variant: queues `cpu` and `gpu`, the gpu queue sized to the GPUs, workers without GPUs."""
    launcher = values["runLauncher"]
    if launcher["type"] != "CeleryK8sRunLauncher":
        return [f"runLauncher.type is {launcher['type']!r}, not CeleryK8sRunLauncher"]
    config = launcher["config"]["celeryK8sRunLauncher"]
    queues = {queue["name"]: queue for queue in config["workerQueues"]}
    problems = [f"no worker queue {name!r}" for name in ("cpu", "gpu") if name not in queues]
    if "gpu" in queues:
        gpu = queues["gpu"]
        slots = gpu["replicaCount"] * (gpu.get("configSource") or {}).get("worker_concurrency", 0)
        gpus = _values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"]
        if slots != gpus:
            problems.append(
                f"the gpu queue starts {slots} embedding steps at once, but values.yaml sizes the cluster for "
                f"{gpus} GPUs (maxConcurrentRuns): keep both at the number of GPUs"
            )
    # The chart's workers only start step Jobs: a GPU on a worker pod would sit idle.
    if GPU in json.dumps(config.get("resources") or {}):
        problems.append("the Celery workers request a GPU, but they only launch step pods (see the file's header)")
    return problems


def shared_volume_problems(values: dict) -> list[str]:
    """One ReadWriteMany claim, mounted in the code location and carried into every run / step pod."""
    problems = []
    claim = _load(SHARED_PVC)
    deployment = _user_deployment(values)
    if "ReadWriteMany" not in claim["spec"]["accessModes"]:
        problems.append(f"{SHARED_PVC.name} is not ReadWriteMany: pods on several nodes mount it at once")
    volumes = {
        volume["name"]: volume
        for volume in deployment.get("volumes") or []
        if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim["metadata"]["name"]
    }
    if not volumes:
        problems.append(f"the code location mounts no volume of claim {claim['metadata']['name']!r}")
    mounts = [m for m in deployment.get("volumeMounts") or [] if m["name"] in volumes]
    if not mounts:
        problems.append("the shared claim is a volume of the code location but is not mounted")
    if not (deployment.get("includeConfigInLaunchedRuns") or {}).get("enabled"):
        problems.append("includeConfigInLaunchedRuns is off: run and step pods would not get the shared volume")
    # Declared a second time on the run launcher, the same volume would be duplicated in run pods.
    for launcher_config in (values["runLauncher"]["config"] or {}).values():
        names = {v["name"] for v in (launcher_config or {}).get("volumes") or []}
        if names & set(volumes):
            problems.append(f"volume(s) {sorted(names & set(volumes))} declared on the run launcher as well")
    return problems


def platform_path_problems(values: dict) -> list[str]:
    """Config, manifests, output_root, weights and the HF cache all live on the shared volume."""
    deployment = _user_deployment(values)
    mounts = [m["mountPath"] for m in deployment.get("volumeMounts") or []]
    env = deployment.get("env") or {}
    if isinstance(env, list):
        env = {item["name"]: item.get("value") for item in env}
    problems = []

    def check(what: str, path: Any) -> None:
        if not path or not any(_under(str(path), mount) for mount in mounts):
            problems.append(f"{what} ({path}) is not on a mounted shared volume {mounts}")

    check("SLIDE2VEC_DAGSTER_CONFIG", env.get("SLIDE2VEC_DAGSTER_CONFIG"))
    check("HF_HOME", env.get("HF_HOME"))
    if env.get("HF_HUB_OFFLINE") != "1":
        problems.append("HF_HUB_OFFLINE is not '1': pods would try to reach the hub")
    example = _load(PLATFORM_EXAMPLE)
    for manifest in example["manifests"]:
        check("manifest", manifest)
    check("output_root", example["output_root"])
    for name, pipeline in example["pipelines"].items():
        weights = (pipeline.get("model") or {}).get("weights")
        if weights:
            check(f"pipelines.{name}.model.weights", weights)
    return problems


def _resolve_local(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and str(schema.get("$ref", "")).startswith("#/"):
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    return schema


def unknown_key_problems(value: Any, schema: dict, root: dict, path: str = "") -> list[str]:
    """Keys the chart's schema does not declare, for every chart-owned object of the values.

    Helm ignores a misspelt key when the schema's object allows extra keys (most do): a typo such as
    ``volumeMount`` would silently do nothing. Objects behind external references (Kubernetes objects:
    resources, volumes, tolerations, ...) and free-form objects are left to the JSON-schema test.
    """
    schema = _resolve_local(schema, root)
    if not isinstance(schema, dict) or "$ref" in schema:  # a Kubernetes definition
        return []
    if "anyOf" in schema:
        branches = [_resolve_local(b, root) for b in schema["anyOf"]]
        fitting = [b for b in branches if b.get("type") in (None, _json_type(value))]
        results = [unknown_key_problems(value, b, root, path) for b in fitting] or [[]]
        return min(results, key=len)
    problems = []
    if isinstance(value, dict) and schema.get("properties"):
        properties = schema["properties"]
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                problems += unknown_key_problems(item, properties[key], root, f"{path}.{key}")
            elif isinstance(extra, dict):
                problems += unknown_key_problems(item, extra, root, f"{path}.{key}")
            else:
                problems.append(f"{path}.{key}: not a key of the chart's schema here (one of {sorted(properties)})")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += unknown_key_problems(item, schema["items"], root, f"{path}[{index}]")
    return problems


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {dict: "object", list: "array", str: "string", float: "number", type(None): "null"}.get(type(value), "?")


def _without_required(schema: Any) -> Any:
    """The chart validates the values merged over its own defaults, which fill every required key; this
    repository holds only the overrides, so `required` is dropped and everything else is kept."""
    if isinstance(schema, dict):
        return {k: _without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [_without_required(v) for v in schema]
    return schema


def _external_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            yield ref
        for value in node.values():
            yield from _external_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _external_refs(value)


def _kubernetes_definitions() -> dict | None:
    """Kubernetes' object definitions bundled by kubernetes-validate (strict: unknown fields are errors),
    or None when it is not installed."""
    try:
        from kubernetes_validate import utils as kv_utils
    except ImportError:
        return None
    version = kv_utils.all_versions()[0]
    bundled = kv_utils.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    return bundled["$defs"]


def chart_schema_problems(values: dict) -> list[str]:
    """JSON-schema validation of the values against the chart's schema (needs jsonschema)."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    schema = json.loads(CHART_SCHEMA.read_text(encoding="utf-8"))
    definitions = _kubernetes_definitions()

    def retrieve(uri: str) -> Resource:
        if definitions is not None:
            # The chart points at the old kubernetesjsonschema.dev layout (#/definitions/...); the bundled
            # file uses #/$defs/... internally. Offer both names for the same definitions.
            contents: dict = {"$defs": definitions, "definitions": definitions}
        else:  # no Kubernetes schema at hand: every referenced Kubernetes object is "anything"
            contents = {}
            for ref in _external_refs(schema):
                if ref.split("#")[0] == uri:
                    node = contents
                    for part in ref.split("#", 1)[1].strip("/").split("/"):
                        node = node.setdefault(part, {})
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    registry = Registry(retrieve=retrieve)
    validator = jsonschema.Draft202012Validator(_without_required(schema), registry=registry)
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<top>'}: {error.message}"
        for error in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    ]
    # Helm merges maps with the chart's defaults but replaces lists: an item of a list (a user deployment,
    # a worker queue) gets no defaults, so its required keys are checked after all.
    for path, item, ref in _chart_list_items(values, schema, schema):
        item_schema = {"$ref": ref, "definitions": schema["definitions"]}
        item_validator = jsonschema.Draft202012Validator(item_schema, registry=registry)
        problems += [f"{path}: {error.message}" for error in item_validator.iter_errors(item)]
    return problems


def _chart_list_items(value: Any, schema: dict, root: dict, path: str = "") -> Iterator[tuple[str, Any, str]]:
    """(path, item, "#/definitions/...") for each item of a list whose items are one of the chart's objects."""
    schema = _resolve_local(schema, root)
    if not isinstance(schema, dict) or "$ref" in schema:
        return
    for branch in schema.get("anyOf", []):
        yield from _chart_list_items(value, branch, root, path)
    if isinstance(value, dict):
        for key, item in value.items():
            if key in schema.get("properties", {}):
                yield from _chart_list_items(item, schema["properties"][key], root, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        ref = schema["items"].get("$ref", "")
        for index, item in enumerate(value):
            if ref.startswith("#/definitions/"):
                yield f"{path}[{index}]", item, ref
            yield from _chart_list_items(item, schema["items"], root, f"{path}[{index}]")


def run_k8s_config_problems(values: dict) -> list[str]:
    """The chart passes runK8sConfig to the run launcher as free-form objects; check its Kubernetes parts
    against Kubernetes' own definitions (needs jsonschema and kubernetes-validate)."""
    import jsonschema

    definitions = _kubernetes_definitions()
    assert definitions is not None
    run_config = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    container, pod_spec = run_config.get("containerConfig") or {}, run_config.get("podSpecConfig") or {}
    parts = {
        "containerConfig.resources": (container.get("resources"), "io.k8s.api.core.v1.ResourceRequirements"),
        "containerConfig.securityContext": (container.get("securityContext"), "io.k8s.api.core.v1.SecurityContext"),
        "podSpecConfig.securityContext": (pod_spec.get("securityContext"), "io.k8s.api.core.v1.PodSecurityContext"),
    }
    for index, toleration in enumerate(pod_spec.get("tolerations") or []):
        parts[f"podSpecConfig.tolerations[{index}]"] = (toleration, "io.k8s.api.core.v1.Toleration")
    problems = []
    for where, (value, name) in parts.items():
        if value is None:
            continue
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": definitions,
            "$ref": f"#/$defs/{name}",
        }
        problems += [
            f"{where}: {error.message}" for error in jsonschema.Draft202012Validator(schema).iter_errors(value)
        ]
    node_selector = pod_spec.get("nodeSelector") or {}
    problems += [
        f"podSpecConfig.nodeSelector.{k}: not a string" for k, v in node_selector.items() if not isinstance(v, str)
    ]
    return problems


# ------------------------------------------------------------------------------------------------ tests


def test_every_deploy_file_parses() -> None:
    yaml_files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert {VALUES, CELERY_VALUES, SHARED_PVC, PLATFORM_EXAMPLE} <= set(yaml_files)
    for path in yaml_files:
        documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
        assert documents, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in documents), f"{path}: a document is not a mapping"
    for path in sorted(DEPLOY.rglob("*.json")):
        json.loads(path.read_text(encoding="utf-8"))


def test_vendored_chart_schema_is_unchanged() -> None:
    data = CHART_SCHEMA.read_bytes()
    assert hashlib.sha256(data).hexdigest() == CHART_SCHEMA_SHA256, (
        f"{CHART_SCHEMA} differs from the copy recorded in deploy/k8s/README.md: replace it whole from the "
        "chart (and update the hash here), never edit it by hand"
    )
    schema = json.loads(data)
    assert schema["title"] == "DagsterHelmValues"
    assert {"dagster-user-deployments", "runLauncher", "dagsterDaemon", "postgresql"} <= set(schema["properties"])


def test_dockerfile_pins_equal_pyproject_and_setup_script() -> None:
    args, pins, setup = _dockerfile_args(), _pyproject_pins(), _setup_pins()
    assert args["DAGSTER_VERSION"] == pins["dagster"] == pins["dagster-webserver"]
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert args["CUCIM_VERSION"] == setup["cucim-cu13"]
    assert args["MOOZY_VERSION"] == setup["moozy"]
    # dagster's integration libraries (dagster-postgres, dagster-k8s, ...) are 0.(minor+16).patch of core.
    major, minor, patch = (int(part) for part in pins["dagster"].split("."))
    assert major == 1
    assert args["DAGSTER_LIBS_VERSION"] == f"0.{minor + 16}.{patch}"


def test_dockerfile_installs_what_it_pins() -> None:
    """Each pin is really passed to pip (not a decorative ARG), with its partner libraries and extras."""
    requirements = _pip_requirements()
    args = _dockerfile_args()
    expected = {
        "torch": args["TORCH_VERSION"],
        "torchvision": args["TORCHVISION_VERSION"],
        "dagster": args["DAGSTER_VERSION"],
        "dagster-postgres": args["DAGSTER_LIBS_VERSION"],
        "dagster-k8s": args["DAGSTER_LIBS_VERSION"],
        "dagster-celery-k8s": args["DAGSTER_LIBS_VERSION"],
        "cucim-cu13": args["CUCIM_VERSION"],
        "moozy": args["MOOZY_VERSION"],
    }
    for name, version in expected.items():
        assert f"{name}=={version}" in requirements, f"the Dockerfile does not pip install {name}=={version}"
    package = [r for r in requirements if r.startswith("/") and "[" in r]
    assert len(package) == 1, f"the package itself is not installed with extras: {requirements}"
    extras = set(package[0].split("[", 1)[1].rstrip("]").split(","))
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    )
    assert extras <= declared, f"the Dockerfile installs extras {sorted(extras - declared)} that pyproject lacks"


def test_image_serves_the_workspace_module() -> None:
    module = _workspace_module()
    cmd = _dockerfile_exec_form("CMD")
    assert cmd and cmd[:3] == ["dagster", "api", "grpc"], cmd
    assert _flag(cmd, "-m") == module
    # The chart and the run launcher replace CMD with their own `dagster ...` arguments: an ENTRYPOINT
    # would be prefixed to them.
    assert _dockerfile_exec_form("ENTRYPOINT") is None
    deployment = _user_deployment(_values())
    assert _flag(deployment["dagsterApiGrpcArgs"], "-m") == module
    exposed = [rest for keyword, rest in _dockerfile_instructions() if keyword == "EXPOSE"]
    assert exposed == [str(deployment["port"])] == [_flag(cmd, "-p")]
    assert _flag(cmd, "-h") == "0.0.0.0"


def test_image_and_pods_run_as_the_same_unprivileged_user() -> None:
    [user] = [rest for keyword, rest in _dockerfile_instructions() if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user} is not a numeric non-root uid"
    values = _values()
    pod_contexts = [
        _user_deployment(values)["podSecurityContext"],
        values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["securityContext"],
    ]
    for context in pod_contexts:
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == int(uid)


def test_no_secret_is_written_into_the_deploy_files() -> None:
    secretish = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY", re.IGNORECASE)
    for keyword, rest in _dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not secretish.search(rest), f"Dockerfile {keyword} {rest}: secrets come from Kubernetes Secrets"
    values = _values()
    assert "postgresqlPassword" not in values["postgresql"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    env = _user_deployment(values).get("env") or {}
    assert not [key for key in env if secretish.search(key)], "a secret-looking env var has a literal value"


def test_gpu_run_pods_get_a_gpu_limit_a_node_selector_and_a_toleration() -> None:
    assert gpu_pod_problems(_values()) == []


def test_code_location_does_not_size_run_pods() -> None:
    # includeConfigInLaunchedRuns copies the code location's `resources` into run pods, over runK8sConfig.
    assert not _user_deployment(_values()).get("resources")


def test_celery_variant_has_cpu_and_gpu_queues() -> None:
    assert celery_queue_problems(_celery_values()) == []


def test_shared_volume_reaches_every_pod() -> None:
    assert shared_volume_problems(_values()) == []
    assert shared_volume_problems(_celery_values()) == []


def test_platform_paths_are_on_the_shared_volume() -> None:
    assert platform_path_problems(_values()) == []


def test_chart_version_in_the_install_command_is_the_dagster_pin() -> None:
    pin = _pyproject_pins()["dagster"]
    for path in (VALUES, CELERY_VALUES, K8S / "README.md"):
        text = path.read_text(encoding="utf-8")
        versions = re.findall(r"helm upgrade --install \S+ dagster/dagster --version (\S+)", text)
        assert versions and set(versions) == {pin}, f"{path}: helm --version {versions} != dagster pin {pin}"


@pytest.mark.parametrize("name", ["values.yaml", "values.yaml + values-celery-k8s.yaml"])
def test_values_use_only_keys_of_the_chart_schema(name: str) -> None:
    values = _values() if name == "values.yaml" else _celery_values()
    schema = json.loads(CHART_SCHEMA.read_text(encoding="utf-8"))
    assert unknown_key_problems(values, schema, schema) == []


@pytest.mark.parametrize("name", ["values.yaml", "values.yaml + values-celery-k8s.yaml"])
def test_values_validate_against_the_chart_json_schema(name: str) -> None:
    pytest.importorskip("jsonschema", reason="jsonschema is not installed (it is not a dependency of the project)")
    values = _values() if name == "values.yaml" else _celery_values()
    assert chart_schema_problems(values) == []


def test_shared_volume_claim_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    from kubernetes_validate import utils as kv_utils

    for document in yaml.safe_load_all(SHARED_PVC.read_text(encoding="utf-8")):
        kubernetes_validate.validate(document, kv_utils.all_versions()[0], strict=True)


def test_example_platform_config_loads() -> None:
    config_module = pytest.importorskip("slide2vec_dagster.config", reason="the package is not importable here")
    config = config_module.load_config(PLATFORM_EXAMPLE)
    mount = _user_deployment(_values())["volumeMounts"][0]["mountPath"]
    assert all(_under(path, mount) for path in config.manifests)
    assert all(_under(config.output_dir(name), mount) for name in config.pipelines)


def _broken(mutate) -> dict:
    values = copy.deepcopy(_values())
    mutate(values)
    return values


def _pod_spec(values: dict) -> dict:
    return values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]


def _limits(values: dict) -> dict:
    return values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["resources"]["limits"]


BROKEN = {
    "no GPU limit": (gpu_pod_problems, lambda v: _limits(v).pop(GPU)),
    "no toleration": (gpu_pod_problems, lambda v: _pod_spec(v).update(tolerations=[])),
    "no node selector": (gpu_pod_problems, lambda v: _pod_spec(v).pop("nodeSelector")),
    "volume not carried to runs": (
        shared_volume_problems,
        lambda v: _user_deployment(v)["includeConfigInLaunchedRuns"].update(enabled=False),
    ),
    "volume not mounted": (shared_volume_problems, lambda v: _user_deployment(v).update(volumeMounts=[])),
    "config off the volume": (
        platform_path_problems,
        lambda v: _user_deployment(v)["env"].update(SLIDE2VEC_DAGSTER_CONFIG="/etc/slide2vec.yaml"),
    ),
    "misspelt key": (
        lambda v: unknown_key_problems(v, *[json.loads(CHART_SCHEMA.read_text(encoding="utf-8"))] * 2),
        lambda v: _user_deployment(v).update(volumeMount=_user_deployment(v)["volumeMounts"]),
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_checkers_reject_broken_values(case: str) -> None:
    checker, mutate = BROKEN[case]
    assert checker(_values()) == []
    assert checker(_broken(mutate)) != []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v["runLauncher"].update(type="K8sLauncher"),
        lambda v: v["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"].update(maxConcurrentRuns="4"),
        lambda v: _user_deployment(v)["volumeMounts"][0].update(mountpath="/shared"),
        lambda v: _user_deployment(v).pop("port"),
    ],
    ids=[
        "unknown launcher type",
        "string where an integer belongs",
        "misspelt Kubernetes field",
        "list item without a required key",
    ],
)
def test_chart_schema_check_rejects_broken_values(mutate) -> None:
    pytest.importorskip("jsonschema", reason="jsonschema is not installed (it is not a dependency of the project)")
    broken = _broken(mutate)
    if "mountpath" in json.dumps(broken) and _kubernetes_definitions() is None:
        pytest.skip("Kubernetes field names need kubernetes-validate's definitions")
    assert chart_schema_problems(broken) != []


def test_chart_has_no_gpu_settings_per_celery_queue() -> None:
    """Why the Celery overlay puts no GPU on the `gpu` queue: the chart's schema forbids it (a worker queue
    takes replicaCount, name, labels, nodeSelector, configSource, additionalCeleryArgs only), and its
    workers only launch step pods. The GPU settings belong to the embedding step's `dagster-k8s/config`."""
    schema = json.loads(CHART_SCHEMA.read_text(encoding="utf-8"))
    values = _celery_values()
    assert unknown_key_problems(values, schema, schema) == []
    for queue in values["runLauncher"]["config"]["celeryK8sRunLauncher"]["workerQueues"]:
        if queue["name"] == "gpu":
            queue["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
            queue["resources"] = {"limits": {GPU: 1}}
    problems = unknown_key_problems(values, schema, schema)
    assert len(problems) == 2 and all(".workerQueues[1]." in p for p in problems), problems


def test_run_pod_kubernetes_settings_are_valid_kubernetes_objects() -> None:
    pytest.importorskip("jsonschema", reason="jsonschema is not installed (it is not a dependency of the project)")
    if _kubernetes_definitions() is None:
        pytest.skip("kubernetes-validate is not installed")
    values = _values()
    assert run_k8s_config_problems(values) == []
    broken = _broken(lambda v: _pod_spec(v)["tolerations"][0].update(efect="NoSchedule"))
    assert run_k8s_config_problems(broken) != []
