"""`python -m llamaft_operator` / `llamaft-operator`: run the operator with our settings.

    llamaft-operator                         # namespaces from LLAMAFT_NAMESPACES, else cluster-wide
    llamaft-operator --namespace ml -n dev   # only these namespaces
    llamaft-operator --standalone            # no peering even if LLAMAFT_PEERING is set

Credentials: in-cluster when running in a pod, else the kubeconfig (`KUBECONFIG`). Settings come
from `LLAMAFT_*` variables (see settings.py and docs/operator.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import kopf

from llamaft_operator import handlers, metrics
from llamaft_operator.builders.common import LABEL_FINETUNE
from llamaft_operator.settings import Settings, SettingsError

log = logging.getLogger("llamaft.operator")


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """kopf's knobs, each tuned for this operator and why."""
    # Our Events are posted explicitly for each step; kopf's own per-log Events would flood
    # `kubectl describe`, so only its warnings and errors become Events.
    kopf_settings.posting.level = logging.WARNING
    # The API server closes each watch after 5 min, so a connection silently dropped by a load
    # balancer is noticed within minutes, not hours; the client waits a little longer than that.
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    # The API server filters the Job watch to our runs' Jobs (the handler's `labels=` filter
    # only runs in the operator, after kopf has kept per-object state for every Job in the
    # watched namespaces: a cluster's CronJobs and CI Jobs would all cost memory and events).
    kopf_settings.watching.label_selectors["batch", "v1", "jobs"] = LABEL_FINETUNE
    # Fail fast on an unreachable API server and retry rather than hang the watch.
    kopf_settings.watching.connect_timeout = 10
    # kopf's own requests (peering keep-alives, event posting) must not hang for aiohttp's
    # default 5 minutes: a stuck call would delay the peering heartbeat past its lifetime.
    kopf_settings.networking.request_timeout = 30
    kopf_settings.networking.connect_timeout = 10
    # Handlers only enqueue; a SIGTERM'd pod needs little time to finish in-flight reconciles,
    # and must exit before the kubelet's 30 s grace period ends.
    kopf_settings.process.ultimate_exiting_timeout = 20
    # Peering: two replicas share one peering object; the lower priority pauses. kopf runs both
    # when priorities tie, hence a random default priority (settings.peering_priority).
    if settings.peering_name:
        kopf_settings.peering.name = settings.peering_name
        kopf_settings.peering.priority = settings.peering_priority
        kopf_settings.peering.mandatory = True
        kopf_settings.peering.stealth = True
        kopf_settings.peering.clusterwide = settings.clusterwide
        # A dead active replica is replaced within a minute.
        kopf_settings.peering.lifetime = 60
    else:
        kopf_settings.peering.standalone = True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llamaft-operator", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeat for several); overrides LLAMAFT_NAMESPACES",
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--standalone", action="store_true", help="run without peering")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"llamaft-operator: {err}", file=sys.stderr)
        sys.exit(2)
    if args.all_namespaces:
        settings = _replace(settings, namespaces=())
    elif args.namespace:
        settings = _replace(settings, namespaces=tuple(args.namespace))
    if args.standalone:
        settings = _replace(settings, peering_name=None)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    handlers.setup(settings)
    metrics.serve(settings.metrics_port)

    @kopf.on.startup()
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, _settings)

    _settings = settings
    where = ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    log.info("Starting operator namespaces=%s image=%s", where, settings.trainer_image)
    liveness = settings.liveness_endpoint
    kopf.run(
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        liveness_endpoint=None if liveness in ("", "off") else liveness,
        standalone=settings.peering_name is None,
        priority=settings.peering_priority,
        peering_name=settings.peering_name,
    )


def _replace(settings: Settings, **changes: Any) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


if __name__ == "__main__":
    main()
