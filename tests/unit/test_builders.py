"""Builders: (run) -> Job / ConfigMap / PVC / Service / RBAC dicts, table-driven per step."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamaft_operator.builders import common, jobs
from llamaft_operator.builders.common import Owner, Run
from llamaft_operator.builders.configmap import (
    build_plan_config_map,
    plan_revision,
    plans_differ,
)
from llamaft_operator.builders.pvc import build_model_cache_pvc, build_work_pvc
from llamaft_operator.builders.rbac import (
    build_trainer_role,
    build_trainer_role_binding,
    build_trainer_service_account,
)
from llamaft_operator.builders.service import build_rendezvous_service
from llamaft_operator.catalogue import GpuCatalogue, GpuType
from llamaft_operator.planner import make_plan
from llamaft_operator.settings import Settings
from llamaft_trainer.config import RunPlan
from tests.unit.plan_helpers import make_finetune

pytestmark = pytest.mark.unit

OWNER = Owner("ft", "ml", "uid-1")
CATALOGUE = GpuCatalogue(
    [
        GpuType(
            name="H100-80GB",
            memory_gib=79.1,
            bf16_tflops=989.0,
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        )
    ],
    default="H100-80GB",
)
SETTINGS = Settings(gpu_catalogue=CATALOGUE, default_gpu_type="H100-80GB")
GOLDEN = {"pvc": {"claimName": "golden", "path": "golden.jsonl"}}


def make_run(
    *,
    model: str = "meta-llama/Llama-3.1-8B-Instruct",
    method: str = "qlora",
    settings: Settings = SETTINGS,
    extra_spec: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Run:
    ft = make_finetune(model=model, method=method, extra_spec=extra_spec, **kwargs)
    if dataset:
        spec = ft.spec.model_dump(by_alias=True, exclude_none=True)
        spec["dataset"].update(dataset)
        ft = ft.model_validate({**ft.model_dump(by_alias=True, exclude_none=True), "spec": spec})
    plan = make_plan(ft, catalogue=settings.gpu_catalogue, run_id=OWNER.uid, final=True)
    return Run(OWNER, ft.spec, plan, settings)


def multi_node_run(**kwargs: Any) -> Run:
    run = make_run(model="meta-llama/Llama-3.1-70B-Instruct", method="full", **kwargs)
    assert run.plan.resources.nodes > 1
    return run


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod(job)["containers"]
    assert len(containers) == 1
    return containers[0]


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c["volumeMounts"]}


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<ref>") for e in c["env"]}


# --- one row per step -------------------------------------------------------------------------


STEP_TABLE = [
    # step, argv head, GPU step, mounts the work volume, mounts the model cache, automount token
    ("validate", ["llamaft", "validate-data"], False, True, False, False),
    ("fetch", ["llamaft", "fetch"], False, False, True, False),
    ("pilot", ["llamaft", "pilot"], True, True, True, True),
    ("train", ["llamaft", "train"], True, True, True, True),
    ("eval", ["llamaft", "evaluate"], True, True, True, False),
    ("publish", ["llamaft", "publish"], False, True, False, False),
]


@pytest.mark.parametrize(("step", "argv", "gpu", "work", "cache", "automount"), STEP_TABLE)
def test_step_job(
    step: str, argv: list[str], gpu: bool, work: bool, cache: bool, automount: bool
) -> None:
    run = make_run(
        extra_spec={
            "publish": {"hub": {"repo": "acme/bot", "tokenSecret": {"name": "hf-write"}}},
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "tokenSecret": {"name": "r"}},
        }
    )
    job = jobs.build_job(run, step)
    c = container(job)
    assert job["metadata"]["name"] == f"ft-{step}"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["metadata"]["labels"][common.LABEL_FINETUNE] == "ft"
    assert job["metadata"]["labels"][common.LABEL_STEP] == step
    assert c["name"] == step
    assert c["command"][: len(argv)] == argv
    assert "--plan" in c["command"]
    assert c["command"][c["command"].index("--plan") + 1] == "/etc/llamaft/plan.json"
    if step != "fetch":
        assert c["command"][c["command"].index("--workdir") + 1] == "/workspace"
    else:
        assert c["command"][c["command"].index("--model-cache") + 1] == "/models"
    paths = mounts(c)
    assert paths["/etc/llamaft"]["readOnly"] is True
    assert "/tmp" in paths
    assert ("/workspace" in paths) == work
    assert ("/models" in paths) == cache
    if cache:
        assert paths["/models"]["readOnly"] is (step != "fetch")
    assert ("/dev/shm" in paths) == gpu
    resources = c["resources"]
    assert ("nvidia.com/gpu" in resources["limits"]) == gpu
    assert pod(job)["automountServiceAccountToken"] is automount
    assert pod(job)["serviceAccountName"] == "llamaft-trainer"
    assert ("nodeSelector" in pod(job)) == gpu
    e = env(c)
    assert e["LLAMAFT_CR_NAME"] == "ft"
    assert e["LLAMAFT_CR_NAMESPACE"] == "ml"
    assert e["LLAMAFT_PROGRESS_INTERVAL"] == "30"
    assert e["LLAMAFT_DATA_ROOT"] == "/data"
    assert e["LLAMAFT_CONFIGMAP_ROOT"] == "/config"
    assert e["LLAMAFT_MODEL_CACHE"] == "/models"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("step", common.STEPS)
def test_every_job_has_the_failure_policy_and_no_ttl(step: str) -> None:
    job = jobs.build_job(make_run(), step)
    spec = job["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    fail_codes = [r["onExitCodes"]["values"] for r in rules if r["action"] == "FailJob"]
    assert sorted(v for codes in fail_codes for v in codes) == [2, 3]
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert "ttlSecondsAfterFinished" not in spec
    assert spec["suspend"] is False
    gpu = step in common.GPU_STEPS
    assert spec["backoffLimit"] == (3 if gpu else 2)


@pytest.mark.parametrize("step", common.STEPS)
def test_every_pod_meets_the_restricted_standard(step: str) -> None:
    job = jobs.build_job(make_run(), step)
    p = pod(job)
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["runAsUser"] == 1000
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in [*p["containers"], *p.get("initContainers", [])]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    tmp = next(v for v in p["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp


@pytest.mark.parametrize(
    ("step", "deadline", "expected"),
    [
        ("train", "90m", 5400),
        ("train", None, None),
        ("pilot", "90m", None),
        ("eval", "90m", None),
        ("validate", "90m", 6 * 3600),
        ("publish", None, 6 * 3600),
    ],
)
def test_active_deadline(step: str, deadline: str | None, expected: int | None) -> None:
    run = make_run(deadline=deadline, approx_tokens=10**6)
    assert jobs.build_job(run, step)["spec"].get("activeDeadlineSeconds") == expected


# --- secrets: only where needed, only as files --------------------------------------------------


@pytest.mark.parametrize(
    ("step", "secret"),
    [
        ("validate", None),
        ("fetch", "hf-read"),
        ("pilot", None),
        ("train", None),
        ("eval", None),
        ("publish", "hf-write"),
    ],
)
def test_hub_tokens_are_mounted_only_into_fetch_and_publish(step: str, secret: str | None) -> None:
    run = make_run(
        extra_spec={
            "model": {
                "name": "meta-llama/Llama-3.1-8B-Instruct",
                "tokenSecret": {"name": "hf-read", "key": "read"},
            },
            "publish": {
                "hub": {"repo": "acme/bot", "tokenSecret": {"name": "hf-write", "key": "write"}}
            },
        }
    )
    job = jobs.build_job(run, step)
    p = pod(job)
    secrets = [v["secret"] for v in p["volumes"] if "secret" in v]
    text = json.dumps(job)
    assert "secretKeyRef" not in text  # never an environment variable
    if secret is None:
        assert secrets == []
        assert "HF_TOKEN_PATH" not in env(container(job))
        return
    assert [s["secretName"] for s in secrets] == [secret]
    assert secrets[0]["items"] == [{"key": "read" if step == "fetch" else "write", "path": "token"}]
    c = container(job)
    assert env(c)["HF_TOKEN_PATH"] == "/var/run/secrets/llamaft/hub/token"
    assert mounts(c)["/var/run/secrets/llamaft/hub"]["readOnly"] is True
    for init in p.get("initContainers", []):
        assert "/var/run/secrets/llamaft/hub" not in mounts(init), "package never sees the token"


@pytest.mark.parametrize("step", ["validate", "pilot", "train", "eval"])
def test_dataset_token_is_mounted_as_a_file_into_the_steps_that_read_data(step: str) -> None:
    run = make_run(dataset={"tokenSecret": {"name": "hf-data", "key": "read"}})
    job = jobs.build_job(run, step)
    secrets = [v["secret"] for v in pod(job)["volumes"] if "secret" in v]
    assert [(s["secretName"], s["items"]) for s in secrets] == [
        ("hf-data", [{"key": "read", "path": "token"}])
    ]
    assert env(container(job))["HF_TOKEN_PATH"] == "/var/run/secrets/llamaft/hub/token"
    assert "secretKeyRef" not in json.dumps(job)


def test_dataset_token_stays_out_of_fetch_and_publish() -> None:
    run = make_run(
        dataset={"tokenSecret": {"name": "hf-data"}},
        extra_spec={"publish": {"dir": {"path": "out", "claimName": "models"}}},
    )
    for step in ("fetch", "publish"):
        assert "hf-data" not in json.dumps(jobs.build_job(run, step)), step


TRACKING = {
    "wandb": {"project": "support-bot", "apiKeySecret": {"name": "wandb", "key": "apiKey"}},
    "mlflow": {
        "trackingUri": "https://mlflow.example.com",
        "credentialsSecret": {"name": "mlflow-creds"},
    },
}


def secret_env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}


@pytest.mark.parametrize("step", ["validate", "fetch", "pilot", "train", "eval", "publish"])
def test_tracking_credentials_reach_the_train_container_only(step: str) -> None:
    run = make_run(extra_spec={"tracking": TRACKING}, approx_tokens=10**6)
    job = jobs.build_job(run, step)
    refs = {k: v for k, v in secret_env(container(job)).items() if k != "JOB_COMPLETION_INDEX"}
    if step != "train":
        assert refs == {}
        assert "mlflow-creds" not in json.dumps(job) and '"wandb"' not in json.dumps(job)
        return
    assert refs == {
        "WANDB_API_KEY": {"name": "wandb", "key": "apiKey"},
        # A token, or a username and password: whichever keys the Secret has.
        "MLFLOW_TRACKING_TOKEN": {"name": "mlflow-creds", "key": "token", "optional": True},
        "MLFLOW_TRACKING_USERNAME": {"name": "mlflow-creds", "key": "username", "optional": True},
        "MLFLOW_TRACKING_PASSWORD": {"name": "mlflow-creds", "key": "password", "optional": True},
    }
    assert not [v for v in pod(job)["volumes"] if "secret" in v], "env only, no token files"


def test_tracking_without_secrets_sets_no_credentials() -> None:
    tracking = {"wandb": {"project": "p"}, "mlflow": {"trackingUri": "sqlite:////workspace/ml.db"}}
    run = make_run(extra_spec={"tracking": tracking})
    assert secret_env(container(jobs.build_job(run, "train"))) == {}
    assert run.plan.tracking is not None and run.plan.tracking.wandb is not None
    assert run.plan.tracking.wandb.project == "p"  # the plan carries it to the trainer


def test_publish_packages_in_an_init_container_and_records_the_publish_hash() -> None:
    run = make_run(extra_spec={"publish": {"hub": {"repo": "a/b", "tokenSecret": {"name": "t"}}}})
    job = jobs.build_job(run, "publish")
    init = pod(job)["initContainers"]
    assert [c["name"] for c in init] == ["package"]
    assert init[0]["command"][:2] == ["llamaft", "package"]
    assert job["metadata"]["annotations"][common.ANNOTATION_PUBLISH_HASH] == (
        common.publish_hash(run.spec)
    )
    other = make_run(extra_spec={"publish": {"hub": {"repo": "a/c", "tokenSecret": {"name": "t"}}}})
    assert common.publish_hash(other.spec) != common.publish_hash(run.spec)


def test_publish_dir_claim_is_mounted_under_publish_root() -> None:
    run = make_run(extra_spec={"publish": {"dir": {"path": "out", "claimName": "models-out"}}})
    c = container(jobs.build_job(run, "publish"))
    assert "/publish/models-out" in mounts(c)
    assert env(c)["LLAMAFT_PUBLISH_ROOT"] == "/publish"


# --- data and placement -------------------------------------------------------------------------


def test_dataset_pvcs_and_config_maps_are_mounted_read_only() -> None:
    run = make_run(
        dataset={"goldenSet": {"configMap": {"name": "golden-cm", "key": "golden.jsonl"}}},
        extra_spec={"pilot": {"enabled": False}},
    )
    for step in ("validate", "pilot", "train", "eval"):
        paths = mounts(container(jobs.build_job(run, step)))
        assert paths["/data/datasets"]["readOnly"] is True
        assert paths["/config/golden-cm"]["readOnly"] is True
    for step in ("fetch", "publish"):
        paths = mounts(container(jobs.build_job(run, step)))
        assert "/data/datasets" not in paths


def test_builtin_models_need_no_cache_volume() -> None:
    run = make_run(model="builtin:tiny-llama")
    for step in common.STEPS:
        c = container(jobs.build_job(run, step))
        assert "/models" not in mounts(c)
        assert "LLAMAFT_MODEL_CACHE" not in env(c)


def test_gpu_placement_from_plan_catalogue_and_spec() -> None:
    run = make_run(
        extra_spec={
            "resources": {
                "nodeSelector": {"pool": "train"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "priorityClassName": "batch-high",
            }
        }
    )
    job = jobs.build_job(run, "train")
    p = pod(job)
    assert p["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "train"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p[
        "tolerations"
    ]
    assert {"key": "dedicated", "operator": "Exists"} in p["tolerations"]
    assert p["priorityClassName"] == "batch-high"
    r = container(job)["resources"]
    gpus = str(run.plan.resources.gpus_per_node)
    assert r["requests"]["nvidia.com/gpu"] == r["limits"]["nvidia.com/gpu"] == gpus
    assert r["requests"]["memory"] == f"{run.plan.resources.memory_gib_per_node}Gi"
    shm = next(v for v in p["volumes"] if v["name"] == "dshm")["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": f"{run.plan.resources.shm_gib}Gi"}


def test_custom_gpu_resource_name() -> None:
    catalogue = GpuCatalogue(
        [GpuType(name="mi300", memory_gib=190, bf16_tflops=1300, resource_name="amd.com/gpu")],
        default="mi300",
    )
    run = make_run(settings=Settings(gpu_catalogue=catalogue, default_gpu_type="mi300"))
    r = container(jobs.build_job(run, "train"))["resources"]
    assert "amd.com/gpu" in r["limits"]
    assert "nvidia.com/gpu" not in r["limits"]


def test_cpu_steps_request_cpu_settings() -> None:
    settings = Settings(gpu_catalogue=CATALOGUE, cpu_step_cpu="2", cpu_step_memory="8Gi")
    r = container(jobs.build_job(make_run(settings=settings), "validate"))["resources"]
    assert r == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}


def test_kueue_queue_label_and_suspended_jobs() -> None:
    run = make_run(extra_spec={"queueName": "team-a"})
    for step in common.STEPS:
        job = jobs.build_job(run, step)
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert job["spec"]["suspend"] is True


# --- multi-node ---------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["pilot", "train"])
def test_multi_node_is_an_indexed_job_with_torchrun_rendezvous(step: str) -> None:
    run = multi_node_run(
        extra_spec={
            "dataset": {"source": {"pvc": {"claimName": "d", "path": "t"}}, "goldenSet": GOLDEN},
            "pilot": {"enabled": True},
        }
    )
    nodes = run.plan.resources.nodes
    job = jobs.build_job(run, step)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == nodes
    p = pod(job)
    assert p["subdomain"] == "ft-train"
    assert spec["template"]["metadata"]["labels"][common.LABEL_RENDEZVOUS] == "true"
    argv = container(job)["command"]
    assert argv[0] == "llamaft-torchrun"  # torchrun that keeps the trainer's exit codes
    assert f"--max_restarts={jobs.MULTI_NODE_RESTARTS}" in argv
    assert f"--nnodes={nodes}" in argv
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in argv
    assert f"--nproc_per_node={run.plan.resources.gpus_per_node}" in argv
    assert "--rdzv_backend=c10d" in argv
    assert f"--rdzv_endpoint=ft-{step}-0.ft-train:29500" in argv
    assert argv[argv.index("-m") + 1 : argv.index("-m") + 3] == ["llamaft_trainer.cli", step]
    assert "JOB_COMPLETION_INDEX" in env(container(job))


@pytest.mark.parametrize("step", ["pilot", "train"])
def test_one_node_with_several_gpus_runs_one_process_per_gpu(step: str) -> None:
    run = make_run(
        model="meta-llama/Llama-3.1-70B-Instruct",
        method="lora",  # bf16 weights: 140 GB, sharded over the GPUs of one node
        gpu_type="H100-80GB",
        max_nodes=1,
        extra_spec={
            "dataset": {"source": {"pvc": {"claimName": "d", "path": "t"}}, "goldenSet": GOLDEN},
            "pilot": {"enabled": True},
        },
    )
    gpus = run.plan.resources.gpus_per_node
    assert run.plan.resources.nodes == 1 and gpus > 1
    job = jobs.build_job(run, step)
    assert "completionMode" not in job["spec"]
    argv = container(job)["command"]
    assert argv[:3] == ["llamaft-torchrun", "--standalone", f"--nproc_per_node={gpus}"]
    assert argv[argv.index("-m") + 1 : argv.index("-m") + 3] == ["llamaft_trainer.cli", step]


def test_operator_and_trainer_build_the_same_launch_line() -> None:
    from llamaft_trainer.distributed import torchrun_command

    for run in (make_run(), multi_node_run()):
        r = run.plan.resources
        multi = r.nodes > 1
        assert container(jobs.build_job(run, "train"))["command"] == torchrun_command(
            nodes=r.nodes,
            gpus_per_node=r.gpus_per_node,
            rendezvous=jobs.rendezvous_endpoint(run, "train") if multi else None,
            rendezvous_id=run.owner.uid if multi else None,
            max_restarts=jobs.MULTI_NODE_RESTARTS,
            plan_path=jobs.PLAN_PATH,
            workdir=jobs.WORKDIR,
        )


def test_eval_stays_single_node_for_a_multi_node_plan() -> None:
    job = jobs.build_job(multi_node_run(), "eval")
    assert "completionMode" not in job["spec"]
    assert container(job)["command"][:2] == ["llamaft", "evaluate"]


def test_rendezvous_service_is_headless_and_selects_the_rank_pods() -> None:
    svc = build_rendezvous_service(multi_node_run())
    assert svc["metadata"]["name"] == "ft-train"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {common.LABEL_FINETUNE: "ft", common.LABEL_RENDEZVOUS: "true"}
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


# --- volumes, plan, RBAC --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("multi", "settings", "mode", "storage_class"),
    [
        (False, SETTINGS, "ReadWriteOnce", None),
        (True, SETTINGS, "ReadWriteMany", None),
        (False, Settings(gpu_catalogue=CATALOGUE, storage_class="fast"), "ReadWriteOnce", "fast"),
    ],
)
def test_work_pvc(multi: bool, settings: Settings, mode: str, storage_class: str | None) -> None:
    run = multi_node_run(settings=settings) if multi else make_run(settings=settings)
    pvc = build_work_pvc(run)
    assert pvc["metadata"]["name"] == "ft-work"
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert pvc["spec"]["accessModes"] == [mode]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert pvc["spec"].get("storageClassName") == storage_class


def test_model_cache_pvc_is_shared_not_owned() -> None:
    pvc = build_model_cache_pvc("ml", SETTINGS)
    assert pvc["metadata"]["name"] == "llamaft-model-cache"
    assert "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"


def test_plan_config_map_round_trips() -> None:
    run = make_run()
    initial = run.plan.model_copy(update={"final": False})
    cm = build_plan_config_map(OWNER, initial, run.plan, 3)
    assert cm["metadata"]["name"] == "ft-plan"
    assert cm["data"]["revision"] == "3"
    assert plan_revision(cm["data"]) == 3
    assert not plans_differ(cm["data"], initial, run.plan), "the revision is not a difference"
    assert plans_differ(cm["data"], run.plan, run.plan)
    assert RunPlan.from_json(cm["data"]["plan.json"]) == run.plan
    assert RunPlan.from_json(cm["data"]["initial-plan.json"]).final is False


def test_trainer_rbac_may_only_patch_status() -> None:
    role = build_trainer_role("ml", SETTINGS)
    assert role["rules"] == [
        {
            "apiGroups": ["llamaft.io"],
            "resources": ["llamafinetunes/status"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = build_trainer_role_binding("ml", SETTINGS)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "llamaft-trainer", "namespace": "ml"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = build_trainer_service_account("ml", SETTINGS)
    assert sa["metadata"]["name"] == "llamaft-trainer"


def test_builders_are_deterministic() -> None:
    a, b = make_run(), make_run()
    for step in common.STEPS:
        assert jobs.build_job(a, step) == jobs.build_job(b, step)
