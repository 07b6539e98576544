"""The cluster test harness: a real Kubernetes control plane built from upstream plus a pod runner.

See docs/testing.md. `fixtures` is the pytest plugin; `scripts/cluster` is the CLI over `session`.
"""
