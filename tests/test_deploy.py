"""The deployment files under deploy/: Helm values for Dagster's chart (values.yaml, and the Celery overlay
values-celery.yaml), the Celery workers' manifests, the user-code Dockerfile, the shared volume's manifest
and the example platform configs.

Nothing here needs a cluster, Docker, Helm or the network. What runs depends on what is installed:

* always (PyYAML, stdlib): every YAML file parses; the Dockerfile's pins equal pyproject.toml's and
  scripts/setup.sh's; the image serves workspace.yaml's module; GPU pods get a GPU limit, a node selector
  and a toleration; the shared volume reaches every pod; the values use only keys the chart's schema
  declares (a walk of the vendored ``values.schema.json``, which catches typos the chart would ignore);
  the Celery workers serve the platform config's queues, with the image, env, instance and volume of the
  chart's pods, and are as many as the daemon's run limit and the ``gpu`` pool expect;
* with ``jsonschema``: full validation of the values against the chart's vendored JSON schema, the
  Kubernetes objects inside them against ``kubernetes-validate``'s bundled Kubernetes definitions when that
  package is installed (otherwise those references are treated as "any object");
* with ``kubernetes-validate``: the shared volume's PersistentVolumeClaim and the workers' Deployments
  against the Kubernetes schema (strict: unknown fields are errors);
* with the package importable: the example platform configs through ``load_config``, and the Celery
  overlay's run launcher built from its config by Dagster (``dagster_celery.launcher.CeleryRunLauncher``).

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
CELERY_VALUES = K8S / "values-celery.yaml"
CELERY_WORKERS = K8S / "celery-workers.yaml"
SHARED_PVC = K8S / "shared-pvc.yaml"
PLATFORM_EXAMPLE = K8S / "platform-config.example.yaml"
PLATFORM_CELERY_EXAMPLE = K8S / "platform-config.celery.example.yaml"
# The instance config of the Celery set-up outside Kubernetes (repository root): the run launcher's env names.
INSTANCE_CELERY = ROOT / "dagster.celery.yaml"
CHART_SCHEMA = K8S / "chart-schema" / "values.schema.json"
# sha256 of the vendored schema as copied (deploy/k8s/README.md says from where): an edit shows up here.
CHART_SCHEMA_SHA256 = "cccbf9a9956cf32b240ef7fc2f4735e03c02db369f15ff444b06492544f8503a"
GPU = "nvidia.com/gpu"
USER_DEPLOYMENTS = "dagster-user-deployments"
# The chart's defaults that the files here rely on (helm/dagster/values.yaml and templates/_helpers.tpl).
CHART_NAME = "dagster"
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"
WORKER_COMMAND = ["slide2vec-dagster", "worker"]
# A worker stopped by Kubernetes finishes its current task (Celery's warm shutdown) within the grace period.
MIN_WORKER_GRACE_SECONDS = 600


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


def _workers() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(CELERY_WORKERS.read_text(encoding="utf-8")) if doc is not None]


def _celery_platform() -> dict:
    return _load(PLATFORM_CELERY_EXAMPLE)


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


def _image_uid() -> int:
    [user] = [rest for keyword, rest in _dockerfile_instructions() if keyword == "USER"]
    return int(user.split(":")[0])


def _code_location_image(values: dict) -> str:
    image = _user_deployment(values)["image"]
    return f"{image['repository']}:{image['tag']}"


def _code_location_env(values: dict) -> dict:
    env = _user_deployment(values).get("env") or {}
    return {item["name"]: item.get("value") for item in env} if isinstance(env, list) else dict(env)


def _helm_release(path: Path) -> str:
    [release] = set(re.findall(r"helm upgrade --install (\S+) dagster/dagster", path.read_text(encoding="utf-8")))
    return release


def _chart_fullname(values: dict, release: str) -> str:
    """The chart's ``dagster.fullname``: the prefix of the objects it creates (``<fullname>-instance``)."""
    chart_globals = values.get("global") or {}
    if chart_globals.get("fullnameOverride"):
        return chart_globals["fullnameOverride"][:63].rstrip("-")
    name = chart_globals.get("nameOverride") or CHART_NAME
    return (release if name in release else f"{release}-{name}")[:63].rstrip("-")


def _worker_queue(deployment: dict) -> str | None:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return _flag(container.get("command") or [], "--queue")


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


def celery_launcher_problems(values: dict) -> list[str]:
    """The Celery overlay: dagster-celery's CeleryRunLauncher through the chart's CustomRunLauncher, on the
    platform config's run queue, with its broker / backend env reaching the webserver and the daemon, which
    run this project's image (it has dagster-celery)."""
    launcher = values["runLauncher"]
    if launcher["type"] != "CustomRunLauncher":
        return [f"runLauncher.type is {launcher['type']!r}, not CustomRunLauncher"]
    custom = launcher["config"].get("customRunLauncher") or {}
    problems = []
    if (custom.get("module"), custom.get("class")) != ("dagster_celery.launcher", "CeleryRunLauncher"):
        problems.append(f"the custom run launcher is {custom.get('module')}.{custom.get('class')}")
    config = custom.get("config") or {}
    celery = _celery_platform()["execution"]["celery"]
    if config.get("default_queue") != celery["run_queue"]:
        problems.append(f"default_queue {config.get('default_queue')!r} != execution.celery.run_queue")
    for key in ("broker", "backend"):
        if not (isinstance(config.get(key), dict) and set(config[key]) == {"env"}):
            problems.append(f"customRunLauncher.config.{key} is not taken from an env var: {config.get(key)!r}")
    if INSTANCE_CELERY.exists():  # the same variables as the tested set-up outside Kubernetes
        reference = _load(INSTANCE_CELERY)["run_launcher"]
        if (reference["module"], reference["class"]) != (custom.get("module"), custom.get("class")):
            problems.append(f"{INSTANCE_CELERY.name} launches runs with another class")
        for key in ("broker", "backend", "default_queue"):
            if reference["config"].get(key) != config.get(key):
                problems.append(
                    f"{key}: {config.get(key)!r} here, {reference['config'].get(key)!r} in {INSTANCE_CELERY.name}"
                )
    code_image = _code_location_image(values)
    secrets = _worker_env_secrets()
    for component in ("dagsterWebserver", "dagsterDaemon"):
        settings = values.get(component) or {}
        image = settings.get("image") or {}
        if f"{image.get('repository')}:{image.get('tag')}" != code_image:
            problems.append(f"{component} runs {image}, not this project's image {code_image} (dagster-celery)")
        names = {item.get("name") for item in settings.get("envSecrets") or []}
        if not secrets or not secrets <= names:
            problems.append(
                f"{component}.envSecrets {sorted(names)} lacks the workers' Celery secret(s) {sorted(secrets)}"
            )
    return problems


def _worker_env_secrets() -> set[str]:
    """Secrets that every worker takes whole (envFrom): the broker / backend URLs of the run launcher."""
    found = None
    for deployment in _workers():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        names = {(item.get("secretRef") or {}).get("name") for item in container.get("envFrom") or []} - {None}
        found = names if found is None else found & names
    return found or set()


def celery_worker_problems(workers: list[dict], values: dict, platform: dict) -> list[str]:
    """The workers of celery-workers.yaml against the merged values and the Celery platform config."""
    problems = []
    execution = platform["execution"]
    celery = execution["celery"]
    if execution.get("executor") != "celery":
        problems.append(f"{PLATFORM_CELERY_EXAMPLE.name}: execution.executor is not celery")
    if str(celery.get("backend", "")).startswith("rpc://"):
        problems.append("execution.celery.backend is rpc://: run monitoring needs a shared result store")
    by_queue: dict[str | None, dict] = {}
    for deployment in workers:
        where = f"{deployment.get('kind')} {deployment['metadata']['name']}"
        if deployment.get("kind") != "Deployment":
            problems.append(f"{where}: not a Deployment")
            continue
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        command = (container.get("command") or []) + (container.get("args") or [])
        queue = _flag(command, "--queue")
        if command[:2] != WORKER_COMMAND or queue is None:
            problems.append(f"{where}: runs {command}, not `slide2vec-dagster worker --queue <queue>`")
        if queue in by_queue:
            problems.append(f"{where}: a second Deployment for queue {queue!r}")
        by_queue[queue] = deployment
        problems += _worker_pod_problems(where, pod, container, values)
        limits = (container.get("resources") or {}).get("limits") or {}
        if queue == celery["gpu_queue"]:
            if limits.get(GPU) != 1:
                problems.append(f"{where}: limits[{GPU}] is {limits.get(GPU)!r}, not 1 (one GPU per gpu worker)")
            if _flag(command, "--concurrency") not in (None, "1"):
                problems.append(f"{where}: --concurrency on the gpu queue (one step per GPU, solo pool)")
            expected = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
            if not pod.get("nodeSelector") or pod.get("nodeSelector") != expected.get("nodeSelector"):
                problems.append(f"{where}: nodeSelector {pod.get('nodeSelector')} is not the GPU nodes' selector")
            if not any(
                t.get("key") == GPU and t.get("effect") in ("NoSchedule", None) for t in pod.get("tolerations") or []
            ):
                problems.append(f"{where}: no toleration of the {GPU} taint")
            if deployment["spec"].get("replicas") != execution.get("gpu_pool_size"):
                problems.append(
                    f"{where}: {deployment['spec'].get('replicas')} GPU workers, but execution.gpu_pool_size is "
                    f"{execution.get('gpu_pool_size')}: keep both at the number of GPUs"
                )
        elif GPU in limits:
            problems.append(f"{where}: the {queue!r} queue holds a GPU it does not use")
    expected_queues = {celery["run_queue"], celery["cpu_queue"], celery["gpu_queue"]}
    if set(by_queue) != expected_queues:
        problems.append(f"worker queues {sorted(map(str, by_queue))} != execution.celery's {sorted(expected_queues)}")
    runs = by_queue.get(celery["run_queue"])
    if runs is not None:
        [container] = runs["spec"]["template"]["spec"]["containers"]
        processes = runs["spec"].get("replicas", 1) * int(_flag(container["command"], "--concurrency") or 2)
        coordinator = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
        if coordinator.get("maxConcurrentRuns") != processes:
            problems.append(
                f"maxConcurrentRuns {coordinator.get('maxConcurrentRuns')} != {processes} run-worker processes: "
                "runs beyond them wait in the broker and run monitoring fails them"
            )
    return problems


def _worker_pod_problems(where: str, pod: dict, container: dict, values: dict) -> list[str]:
    """What every worker shares with the chart's pods: image, user, env, instance, shared volume."""
    problems = []
    if container.get("image") != _code_location_image(values):
        problems.append(
            f"{where}: image {container.get('image')} != the code location's {_code_location_image(values)}"
        )
    context = pod.get("securityContext") or {}
    if context.get("runAsNonRoot") is not True or context.get("runAsUser") != _image_uid():
        problems.append(f"{where}: pod securityContext {context} does not run as the image's uid {_image_uid()}")
    if (pod.get("terminationGracePeriodSeconds") or 30) < MIN_WORKER_GRACE_SECONDS:
        problems.append(f"{where}: terminationGracePeriodSeconds < {MIN_WORKER_GRACE_SECONDS}: stops kill slides")
    env = {item["name"]: item for item in container.get("env") or []}
    for name, value in _code_location_env(values).items():
        if (env.get(name) or {}).get("value") != value:
            problems.append(f"{where}: env {name} is not {value!r} as in the code location")
    dagster_home = (values.get("global") or {}).get("dagsterHome", CHART_DAGSTER_HOME)
    if (env.get("DAGSTER_HOME") or {}).get("value") != dagster_home:
        problems.append(f"{where}: DAGSTER_HOME is not the chart's {dagster_home}")
    secret_ref = ((env.get("DAGSTER_PG_PASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    expected_ref = {"name": values["global"]["postgresqlSecretName"], "key": "postgresql-password"}
    if secret_ref != expected_ref:
        problems.append(f"{where}: DAGSTER_PG_PASSWORD is not taken from {expected_ref}")
    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts") or []}
    # The shared claim, where the code location has it.
    [code_mount] = _user_deployment(values)["volumeMounts"]
    [code_volume] = _user_deployment(values)["volumes"]
    mount = mounts.get(code_mount["mountPath"])
    if (
        mount is None
        or volumes.get(mount["name"], {}).get("persistentVolumeClaim") != code_volume["persistentVolumeClaim"]
    ):
        problems.append(f"{where}: the shared claim is not mounted at {code_mount['mountPath']}")
    # The chart's instance ConfigMap, as the chart mounts it into the webserver and the daemon.
    instance = f"{_chart_fullname(values, _helm_release(CELERY_VALUES))}-instance"
    mount = mounts.get(f"{dagster_home}/dagster.yaml")
    if mount is None or mount.get("subPath") != "dagster.yaml":
        problems.append(f"{where}: no dagster.yaml mounted at {dagster_home}/dagster.yaml")
    elif (volumes.get(mount["name"], {}).get("configMap") or {}).get("name") != instance:
        problems.append(f"{where}: dagster.yaml is not the chart's instance ConfigMap {instance!r}")
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
    assert {VALUES, CELERY_VALUES, CELERY_WORKERS, SHARED_PVC, PLATFORM_EXAMPLE, PLATFORM_CELERY_EXAMPLE} <= set(
        yaml_files
    )
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
    assert args["DAGSTER_LIBS_VERSION"] == pins["dagster-postgres"] == pins["dagster-celery"]


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
        "dagster-celery": args["DAGSTER_LIBS_VERSION"],
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
    values, celery = _values(), _celery_values()
    pod_contexts = [
        _user_deployment(values)["podSecurityContext"],
        values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["securityContext"],
        # The Celery overlay runs the webserver and the daemon from this image too, and the workers.
        celery["dagsterWebserver"]["podSecurityContext"],
        celery["dagsterDaemon"]["podSecurityContext"],
        *(worker["spec"]["template"]["spec"]["securityContext"] for worker in _workers()),
    ]
    for context in pod_contexts:
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == int(uid)


def test_image_makes_the_charts_dagster_home_writable_by_its_user() -> None:
    """The chart mounts dagster.yaml into $DAGSTER_HOME with a subPath; a directory Kubernetes creates for that
    mount belongs to root, so the image creates it, owned by its user."""
    uid = _image_uid()
    created = [
        rest
        for keyword, rest in _dockerfile_instructions()
        if keyword == "RUN" and re.search(rf"install -d -o {uid} -g {uid} {re.escape(CHART_DAGSTER_HOME)}(\s|$)", rest)
    ]
    assert created, f"the Dockerfile does not create {CHART_DAGSTER_HOME} owned by uid {uid}"
    assert "dagsterHome" not in (_values().get("global") or {}), "global.dagsterHome moved: update the Dockerfile"


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
    for worker in _workers():
        [container] = worker["spec"]["template"]["spec"]["containers"]
        literal = [item["name"] for item in container.get("env") or [] if "value" in item]
        assert not [name for name in literal if secretish.search(name)], f"{worker['metadata']['name']}: {literal}"
    # No URL with a password (scheme://user:password@host) in the values, the workers or the platform configs.
    credentials = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)
    for path in (VALUES, CELERY_VALUES, CELERY_WORKERS, PLATFORM_EXAMPLE, PLATFORM_CELERY_EXAMPLE):
        assert not credentials.search(path.read_text(encoding="utf-8")), f"{path.name} holds a URL with a password"


def test_gpu_run_pods_get_a_gpu_limit_a_node_selector_and_a_toleration() -> None:
    assert gpu_pod_problems(_values()) == []


def test_code_location_does_not_size_run_pods() -> None:
    # includeConfigInLaunchedRuns copies the code location's `resources` into run pods, over runK8sConfig.
    assert not _user_deployment(_values()).get("resources")


def test_celery_overlay_launches_runs_with_dagster_celery() -> None:
    assert celery_launcher_problems(_celery_values()) == []


def test_celery_workers_serve_the_platform_queues() -> None:
    assert celery_worker_problems(_workers(), _celery_values(), _celery_platform()) == []


def test_celery_overlay_run_launcher_loads() -> None:
    """Dagster builds the overlay's run launcher from its config exactly as the daemon will (class path
    importable, every config key known to CeleryRunLauncher), with the env the Secret provides."""
    pytest.importorskip("dagster_celery.launcher", reason="dagster-celery is not installed")
    from dagster._serdes.config_class import ConfigurableClassData
    from dagster_celery.launcher import CeleryRunLauncher

    custom = _celery_values()["runLauncher"]["config"]["customRunLauncher"]
    celery = _celery_platform()["execution"]["celery"]
    env = {custom["config"][key]["env"]: celery[key] for key in ("broker", "backend")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        data = ConfigurableClassData(custom["module"], custom["class"], yaml.safe_dump(custom["config"]))
        launcher = data.rehydrate(as_type=CeleryRunLauncher)
    assert (launcher.broker, launcher.backend) == (celery["broker"], celery["backend"])
    assert launcher.default_queue == celery["run_queue"]


def test_worker_manifests_are_valid_kubernetes_objects() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    from kubernetes_validate import utils as kv_utils

    workers = _workers()
    assert len(workers) == 3
    versions = sorted(set(kv_utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
    for version in (versions[0], versions[-1]):  # the oldest and the newest Kubernetes bundled
        for document in workers:
            kubernetes_validate.validate(document, version, strict=True)
        broken = copy.deepcopy(workers[2])
        broken["spec"]["template"]["spec"]["tolerations"][0]["efect"] = "NoSchedule"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)


def test_shared_volume_reaches_every_pod() -> None:
    assert shared_volume_problems(_values()) == []
    assert shared_volume_problems(_celery_values()) == []


def test_platform_paths_are_on_the_shared_volume() -> None:
    assert platform_path_problems(_values()) == []


def test_chart_version_in_the_install_command_is_the_dagster_pin() -> None:
    pin = _pyproject_pins()["dagster"]
    for path in (VALUES, CELERY_VALUES, CELERY_WORKERS, K8S / "README.md"):
        text = path.read_text(encoding="utf-8")
        versions = re.findall(r"helm upgrade --install \S+ dagster/dagster --version (\S+)", text)
        if path == CELERY_WORKERS:  # no install command of its own: only its image's dagster
            assert not versions
            continue
        assert versions and set(versions) == {pin}, f"{path}: helm --version {versions} != dagster pin {pin}"


@pytest.mark.parametrize("name", ["values.yaml", "values.yaml + values-celery.yaml"])
def test_values_use_only_keys_of_the_chart_schema(name: str) -> None:
    values = _values() if name == "values.yaml" else _celery_values()
    schema = json.loads(CHART_SCHEMA.read_text(encoding="utf-8"))
    assert unknown_key_problems(values, schema, schema) == []


@pytest.mark.parametrize("name", ["values.yaml", "values.yaml + values-celery.yaml"])
def test_values_validate_against_the_chart_json_schema(name: str) -> None:
    pytest.importorskip("jsonschema", reason="jsonschema is not installed (it is not a dependency of the project)")
    values = _values() if name == "values.yaml" else _celery_values()
    assert chart_schema_problems(values) == []


def test_shared_volume_claim_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    from kubernetes_validate import utils as kv_utils

    for document in yaml.safe_load_all(SHARED_PVC.read_text(encoding="utf-8")):
        kubernetes_validate.validate(document, kv_utils.all_versions()[0], strict=True)


@pytest.mark.parametrize("path", [PLATFORM_EXAMPLE, PLATFORM_CELERY_EXAMPLE], ids=lambda p: p.name)
def test_example_platform_config_loads(path: Path) -> None:
    config_module = pytest.importorskip("slide2vec_dagster.config", reason="the package is not importable here")
    config = config_module.load_config(path)
    mount = _user_deployment(_values())["volumeMounts"][0]["mountPath"]
    assert all(_under(p, mount) for p in config.manifests)
    assert all(_under(config.output_dir(name), mount) for name in config.pipelines)
    expected = "celery" if path == PLATFORM_CELERY_EXAMPLE else "in_process"
    assert config.execution.executor == expected


def test_example_platform_configs_differ_only_in_execution() -> None:
    plain, celery = _load(PLATFORM_EXAMPLE), _celery_platform()
    assert {k: v for k, v in plain.items() if k != "execution"} == {k: v for k, v in celery.items() if k != "execution"}


def test_gpu_pool_is_the_gpus_of_the_run_pods() -> None:
    """values.yaml: one GPU per run pod, so the `gpu` pool the cohort sensor sets (execution.gpu_pool_size)
    is the daemon's run limit; a smaller pool would leave run pods idle on their GPU."""
    gpus = _values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"]
    assert (_load(PLATFORM_EXAMPLE).get("execution") or {}).get("gpu_pool_size") == gpus


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


def _worker(workers: list[dict], queue: str) -> dict:
    [deployment] = [d for d in workers if _worker_queue(d) == queue]
    return deployment


def _container(workers: list[dict], queue: str) -> dict:
    return _worker(workers, queue)["spec"]["template"]["spec"]["containers"][0]


def _set_flag(workers: list[dict], queue: str, flag: str, value: str) -> None:
    command = _container(workers, queue)["command"]
    command[command.index(flag) + 1] = value


# (what is broken, mutation of (workers, merged values, Celery platform config))
BROKEN_CELERY = {
    "gpu worker without a GPU": lambda w, v, p: _container(w, "gpu")["resources"]["limits"].pop(GPU),
    "gpu worker without toleration": lambda w, v, p: _worker(w, "gpu")["spec"]["template"]["spec"].pop("tolerations"),
    "gpu worker without node selector": lambda w, v, p: _worker(w, "gpu")["spec"]["template"]["spec"].pop(
        "nodeSelector"
    ),
    "GPU on the cpu queue": lambda w, v, p: _container(w, "cpu")["resources"]["limits"].update({GPU: 1}),
    "gpu workers != gpu pool": lambda w, v, p: p["execution"].update(gpu_pool_size=2),
    "run workers != maxConcurrentRuns": lambda w, v, p: _set_flag(w, "dagster", "--concurrency", "4"),
    "queue renamed in the config only": lambda w, v, p: p["execution"]["celery"].update(cpu_queue="tiling"),
    "worker runs another command": lambda w, v, p: _container(w, "cpu").update(command=["celery", "worker"]),
    "worker on another image": lambda w, v, p: _container(w, "cpu").update(image="python:3.11-slim"),
    "worker without the shared volume": lambda w, v, p: _container(w, "dagster")["volumeMounts"].pop(0),
    "worker with another instance": lambda w, v, p: _worker(w, "gpu")["spec"]["template"]["spec"]["volumes"][1][
        "configMap"
    ].update(name="slide2vec-instance"),
    "worker without the Postgres password": lambda w, v, p: _container(w, "cpu")["env"].pop(),
    "worker with another config": lambda w, v, p: _container(w, "gpu")["env"][0].update(value="/etc/platform.yaml"),
    "worker as root": lambda w, v, p: _worker(w, "cpu")["spec"]["template"]["spec"]["securityContext"].update(
        runAsUser=0
    ),
    "worker stopped mid-slide": lambda w, v, p: _worker(w, "gpu")["spec"]["template"]["spec"].update(
        terminationGracePeriodSeconds=30
    ),
    "rpc:// result backend": lambda w, v, p: p["execution"]["celery"].update(backend="rpc://"),
    "release renamed": lambda w, v, p: v["global"].update(fullnameOverride="s2v"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CELERY))
def test_celery_worker_check_rejects_broken_workers(case: str) -> None:
    workers, values, platform = _workers(), _celery_values(), _celery_platform()
    assert celery_worker_problems(workers, values, platform) == []
    BROKEN_CELERY[case](workers, values, platform)
    assert celery_worker_problems(workers, values, platform) != []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v["runLauncher"].update(type="CeleryK8sRunLauncher"),
        lambda v: v["runLauncher"]["config"]["customRunLauncher"].update({"class": "CeleryK8sRunLauncher"}),
        lambda v: v["runLauncher"]["config"]["customRunLauncher"]["config"].update(default_queue="cpu"),
        lambda v: v["runLauncher"]["config"]["customRunLauncher"]["config"].update(broker="pyamqp://rabbitmq//"),
        lambda v: v["dagsterDaemon"].pop("image"),
        lambda v: v["dagsterWebserver"].update(envSecrets=[]),
    ],
    ids=[
        "chart's Celery-K8s launcher",
        "another class",
        "runs sent to the cpu queue",
        "broker written into the values",
        "daemon on the chart's image",
        "webserver without the broker secret",
    ],
)
def test_celery_launcher_check_rejects_broken_values(mutate) -> None:
    values = _celery_values()
    assert celery_launcher_problems(values) == []
    mutate(values)
    assert celery_launcher_problems(values) != []


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


def test_run_pod_kubernetes_settings_are_valid_kubernetes_objects() -> None:
    pytest.importorskip("jsonschema", reason="jsonschema is not installed (it is not a dependency of the project)")
    if _kubernetes_definitions() is None:
        pytest.skip("kubernetes-validate is not installed")
    values = _values()
    assert run_k8s_config_problems(values) == []
    broken = _broken(lambda v: _pod_spec(v)["tolerations"][0].update(efect="NoSchedule"))
    assert run_k8s_config_problems(broken) != []
