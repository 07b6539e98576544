"""Pure builders: (run context) -> Kubernetes object dicts. No API calls, no kopf, no client.

Each module builds one kind: `jobs` (the step Jobs), `configmap` (the run plan), `pvc` (work volume
and model cache), `service` (headless Service for torchrun rendezvous), `rbac` (the trainer's
ServiceAccount, Role and RoleBinding). `common` holds names, labels, owner references, paths and
the restricted Pod Security Standard contexts they share.
"""
