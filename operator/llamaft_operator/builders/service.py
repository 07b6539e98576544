"""The headless Service `<name>-train` that gives multi-node pods stable DNS names.

Pods of an Indexed Job with `subdomain: <name>-train` resolve as `<job>-<index>.<name>-train`, so
every rank finds torchrun's rendezvous on index 0. `publishNotReadyAddresses` publishes the names
before the pods are Ready: they rendezvous while starting.
"""

from __future__ import annotations

from typing import Any

from llamaft_operator.builders.common import (
    LABEL_FINETUNE,
    LABEL_RENDEZVOUS,
    RENDEZVOUS_SUFFIX,
    Run,
    metadata,
)


def build_rendezvous_service(run: Run) -> dict[str, Any]:
    port = run.settings.rendezvous_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(run.owner, RENDEZVOUS_SUFFIX, "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_FINETUNE: run.owner.name, LABEL_RENDEZVOUS: "true"},
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        },
    }
