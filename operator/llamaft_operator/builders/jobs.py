"""The step Jobs: validate, fetch (CPU), pilot, train, eval (GPU), publish (CPU).

Every Job:
- `restartPolicy: Never` with a `podFailurePolicy`: a disruption (preemption, drained or lost
  node: pod condition `DisruptionTarget`) is ignored, exit 2 (bad input) and exit 3 (publish
  rejected) fail the Job at once, anything else counts against `backoffLimit` and the retried pod
  resumes from the newest complete checkpoint;
- `podReplacementPolicy: Failed`, so a replacement starts only once the old pod has stopped
  writing to the work volume;
- no `ttlSecondsAfterFinished`: the operator reads results from finished pods;
- the restricted Pod Security Standard, `/tmp` as the only writable path besides the volumes;
- the plan ConfigMap at /etc/llamaft/plan.json, the work PVC at /workspace, datasets under /data
  (PVCs) and /config (ConfigMaps), the model cache at /models.

A multi-node pilot or train is an Indexed Job (completions = parallelism = nodes) whose pods join
the headless Service `<name>-train` and rendezvous with torchrun on index 0's hostname.

Only the publish pod mounts the Hub write token, only the fetch pod the model's read token, and only
the pods that read the data (validate, pilot, train, eval) the dataset's read token, each as a file
(`HF_TOKEN_PATH`), never as an environment variable. The one exception is experiment tracking: the
W&B and MLflow clients read their credentials from the environment, so `spec.tracking`'s Secrets
are set with `valueFrom.secretKeyRef`, in the train container only (the one that logs).
"""

from __future__ import annotations

from typing import Any

from llamaft_operator.api import parse_duration_seconds
from llamaft_operator.builders.common import (
    ANNOTATION_PUBLISH_HASH,
    CONFIGMAP_ROOT,
    DATA_ROOT,
    EVAL,
    FETCH,
    GPU_STEPS,
    INITIAL_PLAN_FILE,
    LABEL_KUEUE_QUEUE,
    LABEL_RENDEZVOUS,
    LABEL_STEP,
    MODEL_CACHE,
    PILOT,
    PLAN_DIR,
    PLAN_FILE,
    PLAN_PATH,
    PLAN_SUFFIX,
    PUBLISH,
    PUBLISH_ROOT,
    RENDEZVOUS_SUFFIX,
    TERMINATION_LOG,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_PATH,
    TRAIN,
    VALIDATE,
    WORK_SUFFIX,
    WORKDIR,
    Run,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
    publish_hash,
)
from llamaft_trainer.errors import EXIT_BAD_INPUT, EXIT_PUBLISH_REJECTED
from llamaft_trainer.plan_file import REVISION_ENV, REVISION_FILE

# Seconds a GPU pod gets after SIGTERM: enough for the trainer to finish a checkpoint.
GPU_GRACE_SECONDS = 180
CPU_GRACE_SECONDS = 30
TMP_SIZE_LIMIT = "8Gi"
# The trainer CLI entry point, and its module for torchrun (`python -m`).
CLI = "llamaft"
CLI_MODULE = "llamaft_trainer.cli"
# torchrun that exits with the trainer's exit codes (torchrun itself always exits 1).
LAUNCHER = "llamaft-torchrun"
MULTI_NODE_RESTARTS = 3
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"

_COMMANDS = {
    VALIDATE: "validate-data",
    FETCH: "fetch",
    PILOT: "pilot",
    TRAIN: "train",
    EVAL: "evaluate",
    PUBLISH: "publish",
}


def uses_model_cache(run: Run) -> bool:
    """Built-in models ship with the trainer image; everything else is fetched into the cache."""
    return not run.spec.model.name.startswith("builtin:")


def is_multi_node(run: Run, step: str) -> bool:
    return step in (PILOT, TRAIN) and run.plan.resources.nodes > 1


def rendezvous_endpoint(run: Run, step: str) -> str:
    """Index 0's stable hostname: `<job>-0.<service>` (the Job sets hostname and subdomain)."""
    return f"{run.name(step)}-0.{run.name(RENDEZVOUS_SUFFIX)}:{run.settings.rendezvous_port}"


def command(run: Run, step: str) -> list[str]:
    """The container command of `step` (the trainer CLI's contract)."""
    subcommand = _COMMANDS[step]
    if step == FETCH:
        return [CLI, subcommand, "--plan", PLAN_PATH, "--model-cache", MODEL_CACHE]
    tail = [subcommand, "--plan", PLAN_PATH, "--workdir", WORKDIR]
    resources = run.plan.resources
    if step not in (PILOT, TRAIN) or resources.total_gpus == 1:
        return [CLI, *tail]
    if not is_multi_node(run, step):
        # One process per GPU: ZeRO shards across them (one process would use one GPU).
        return [
            LAUNCHER,
            "--standalone",
            f"--nproc_per_node={resources.gpus_per_node}",
            "-m",
            CLI_MODULE,
            *tail,
        ]
    return [
        LAUNCHER,
        f"--nnodes={resources.nodes}",
        # Expanded by the kubelet from the env var the Indexed Job sets on each pod.
        "--node_rank=$(JOB_COMPLETION_INDEX)",
        f"--nproc_per_node={resources.gpus_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={rendezvous_endpoint(run, step)}",
        f"--rdzv_id={run.owner.uid}",
        # A worker that crashes is restarted in place and every node re-rendezvouses and resumes
        # from the newest checkpoint; a replaced pod joins the open rendezvous the same way. An
        # agent that runs out of restarts closes the rendezvous, so the Job's retries of that
        # index cannot rejoin: these restarts are the multi-node retry budget.
        f"--max_restarts={MULTI_NODE_RESTARTS}",
        "-m",
        CLI_MODULE,
        *tail,
    ]


def _env(run: Run, step: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "LLAMAFT_CR_NAME", "value": run.owner.name},
        {"name": "LLAMAFT_CR_NAMESPACE", "value": run.owner.namespace},
        {"name": "LLAMAFT_PROGRESS_INTERVAL", "value": str(run.settings.progress_interval_seconds)},
        {"name": "LLAMAFT_STEP", "value": step},
        # The pod waits until the kubelet mounts at least this revision of the plan ConfigMap.
        {"name": REVISION_ENV, "value": str(run.plan_revision)},
        {"name": "LLAMAFT_RUN_ID", "value": run.plan.run_id},
        {"name": "LLAMAFT_DATA_ROOT", "value": DATA_ROOT},
        {"name": "LLAMAFT_CONFIGMAP_ROOT", "value": CONFIGMAP_ROOT},
        # The root filesystem is read-only: every cache goes under /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "HF_HOME", "value": "/tmp/.cache/huggingface"},
        {"name": "TRITON_CACHE_DIR", "value": "/tmp/.cache/triton"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if uses_model_cache(run):
        env.append({"name": "LLAMAFT_MODEL_CACHE", "value": MODEL_CACHE})
    if step == PUBLISH:
        env.append({"name": "LLAMAFT_PUBLISH_ROOT", "value": PUBLISH_ROOT})
    env += tracking_env(run, step)
    if is_multi_node(run, step):
        env.append(
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}},
            }
        )
    return env


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def tracking_env(run: Run, step: str) -> list[dict[str, Any]]:
    """W&B / MLflow credentials for the train container: the only step that logs to them.

    MLflow's Secret may hold a token or a username and password, so each of its keys is optional.
    """
    tracking = run.spec.tracking
    if step != TRAIN or tracking is None:
        return []
    env: list[dict[str, Any]] = []
    if tracking.wandb is not None and tracking.wandb.api_key_secret is not None:
        ref = tracking.wandb.api_key_secret
        env.append(_secret_env("WANDB_API_KEY", ref.name, ref.key))
    if tracking.mlflow is not None and tracking.mlflow.credentials_secret is not None:
        creds = tracking.mlflow.credentials_secret
        for var, key in (
            ("MLFLOW_TRACKING_TOKEN", creds.token_key),
            ("MLFLOW_TRACKING_USERNAME", creds.username_key),
            ("MLFLOW_TRACKING_PASSWORD", creds.password_key),
        ):
            env.append(_secret_env(var, creds.name, key, optional=True))
    return env


def _data_volumes(run: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Dataset PVCs under /data/<claim> and ConfigMaps under /config/<name>, read-only."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    sources = [run.spec.dataset.source]
    if run.spec.dataset.golden_set is not None:
        sources.append(run.spec.dataset.golden_set)
    claims = sorted({s.pvc.claim_name for s in sources if s.pvc is not None})
    config_maps = sorted({s.config_map.name for s in sources if s.config_map is not None})
    for i, claim in enumerate(claims):
        volumes.append(
            {"name": f"data-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": f"data-{i}", "mountPath": f"{DATA_ROOT}/{claim}", "readOnly": True})
    for i, name in enumerate(config_maps):
        volumes.append({"name": f"config-{i}", "configMap": {"name": name}})
        mounts.append(
            {"name": f"config-{i}", "mountPath": f"{CONFIGMAP_ROOT}/{name}", "readOnly": True}
        )
    return volumes, mounts


def work_claim(run: Run) -> str:
    return run.spec.work_volume_claim or run.name(WORK_SUFFIX)


def _volumes(run: Run, step: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    plan_items = [
        {"key": PLAN_FILE, "path": PLAN_FILE},
        {"key": INITIAL_PLAN_FILE, "path": INITIAL_PLAN_FILE},
        {"key": REVISION_FILE, "path": REVISION_FILE},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "plan", "configMap": {"name": run.name(PLAN_SUFFIX), "items": plan_items}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "plan", "mountPath": PLAN_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if step != FETCH:
        volumes.append({"name": "work", "persistentVolumeClaim": {"claimName": work_claim(run)}})
        mounts.append({"name": "work", "mountPath": WORKDIR})
    if uses_model_cache(run) and step in (FETCH, *GPU_STEPS):
        cache = run.settings.model_cache_claim
        read_only = step != FETCH
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": cache, "readOnly": read_only},
            }
        )
        mounts.append({"name": "models", "mountPath": MODEL_CACHE, "readOnly": read_only})
    if step in (VALIDATE, *GPU_STEPS):
        data_volumes, data_mounts = _data_volumes(run)
        volumes += data_volumes
        mounts += data_mounts
    if step in GPU_STEPS:
        # NCCL and the data loader's workers share tensors through /dev/shm.
        shm = f"{run.plan.resources.shm_gib}Gi"
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if step == PUBLISH and run.spec.publish and run.spec.publish.dir:
        target = run.spec.publish.dir
        if target.claim_name:
            volumes.append(
                {"name": "publish", "persistentVolumeClaim": {"claimName": target.claim_name}}
            )
            mounts.append({"name": "publish", "mountPath": f"{PUBLISH_ROOT}/{target.claim_name}"})
    token = _token_secret(run, step)
    if token is not None:
        name, key = token
        volumes.append(
            {
                "name": "hub-token",
                "secret": {
                    "secretName": name,
                    "items": [{"key": key, "path": TOKEN_FILE}],
                    "defaultMode": 0o440,
                },
            }
        )
    return volumes, mounts


def _token_secret(run: Run, step: str) -> tuple[str, str] | None:
    """The Secret (name, key) mounted into this step: the write token for publish, the model's
    read token for fetch, the dataset's read token for the steps that read the data."""
    if step == PUBLISH and run.spec.publish and run.spec.publish.hub:
        ref = run.spec.publish.hub.token_secret
        return (ref.name, ref.key) if ref else None
    if step == FETCH and run.spec.model.token_secret:
        ref = run.spec.model.token_secret
        return ref.name, ref.key
    if step in (VALIDATE, *GPU_STEPS) and run.spec.dataset.token_secret:
        ref = run.spec.dataset.token_secret
        return ref.name, ref.key
    return None


def _token_mount() -> dict[str, Any]:
    return {"name": "hub-token", "mountPath": TOKEN_DIR, "readOnly": True}


def _resources(run: Run, step: str) -> dict[str, Any]:
    settings = run.settings
    if step not in GPU_STEPS:
        cpu = {"cpu": settings.cpu_step_cpu, "memory": settings.cpu_step_memory}
        return {"requests": dict(cpu), "limits": dict(cpu)}
    plan = run.plan.resources
    gpu = settings.gpu_catalogue.get(plan.gpu_type)
    requests = {
        "cpu": str(plan.cpu_per_node),
        "memory": f"{plan.memory_gib_per_node}Gi",
        gpu.resource_name: str(plan.gpus_per_node),
    }
    limits = {"memory": requests["memory"], gpu.resource_name: requests[gpu.resource_name]}
    return {"requests": requests, "limits": limits}


def _container(
    run: Run, step: str, name: str, cmd: list[str], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    settings = run.settings
    env = _env(run, step)
    if _token_secret(run, step) is not None:
        env.append({"name": "HF_TOKEN_PATH", "value": TOKEN_PATH})
        mounts = [*mounts, _token_mount()]
    return {
        "name": name,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": cmd,
        "env": env,
        "resources": _resources(run, step),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        # The trainer writes a JSON result; if it dies first, the log tail says why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            # A preempted pod or a lost node is not the run's fault: retry without counting it.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            # Bad input and a rejected publish fail the same way on every retry.
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [EXIT_BAD_INPUT]}},
            {
                "action": "FailJob",
                "onExitCodes": {"operator": "In", "values": [EXIT_PUBLISH_REJECTED]},
            },
        ]
    }


def _node_placement(run: Run, step: str) -> dict[str, Any]:
    if step not in GPU_STEPS:
        return {}
    gpu = run.settings.gpu_catalogue.get(run.plan.resources.gpu_type)
    selector = {**gpu.node_selector, **(run.spec.resources.node_selector or {})}
    tolerations: list[dict[str, Any]] = [
        # GPU nodes are commonly tainted with their extended resource name.
        {"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
    ]
    for t in run.spec.resources.tolerations or []:
        tolerations.append(t.model_dump(by_alias=True, exclude_none=True))
    placement: dict[str, Any] = {"tolerations": tolerations}
    if selector:
        placement["nodeSelector"] = selector
    if run.spec.resources.priority_class_name:
        placement["priorityClassName"] = run.spec.resources.priority_class_name
    return placement


def build_job(run: Run, step: str) -> dict[str, Any]:
    """The Job of `step` for this run."""
    settings = run.settings
    gpu_step = step in GPU_STEPS
    multi = is_multi_node(run, step)
    volumes, mounts = _volumes(run, step)
    cmd = command(run, step)
    init_containers: list[dict[str, Any]] = []
    if step == PUBLISH:
        package = [CLI, "package", "--plan", PLAN_PATH, "--workdir", WORKDIR]
        init_containers.append(_container(run, "package", "package", package, mounts))
    pod_labels = {**labels(run.owner.name, step), LABEL_STEP: step}
    if multi:
        pod_labels[LABEL_RENDEZVOUS] = "true"
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.trainer_service_account,
        # Only the training steps patch status.progress; the others need no API token.
        "automountServiceAccountToken": step in (PILOT, TRAIN),
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": GPU_GRACE_SECONDS if gpu_step else CPU_GRACE_SECONDS,
        "containers": [_container(run, step, step, cmd, mounts)],
        "volumes": volumes,
        **_node_placement(run, step),
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    if multi:
        pod_spec["subdomain"] = run.name(RENDEZVOUS_SUFFIX)

    job_labels = {LABEL_STEP: step}
    annotations: dict[str, str] = {}
    if run.spec.queue_name:
        job_labels[LABEL_KUEUE_QUEUE] = run.spec.queue_name
    if step == PUBLISH:
        annotations[ANNOTATION_PUBLISH_HASH] = publish_hash(run.spec)
    job_spec: dict[str, Any] = {
        "backoffLimit": settings.train_backoff_limit if gpu_step else settings.cpu_backoff_limit,
        "podFailurePolicy": pod_failure_policy(),
        "podReplacementPolicy": "Failed",
        # Kueue admits (unsuspends) queued Jobs; without a queue they start at once.
        "suspend": bool(run.spec.queue_name),
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    deadline = _deadline_seconds(run, step)
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    if multi:
        nodes = run.plan.resources.nodes
        job_spec.update(completions=nodes, parallelism=nodes, completionMode="Indexed")
    else:
        job_spec.update(completions=1, parallelism=1)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(run.owner, step, step, job_labels, annotations or None),
        "spec": job_spec,
    }


def _deadline_seconds(run: Run, step: str) -> int | None:
    if step == TRAIN:
        deadline = run.spec.resources.deadline
        return parse_duration_seconds(deadline) if deadline else None
    if step in GPU_STEPS:
        return None
    return run.settings.cpu_step_deadline_seconds
