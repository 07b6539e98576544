"""`helm test`: the operator is ready and the LlamaFineTune API is served. Standard library only.

Runs in the operator image as the chart's test ServiceAccount (get Deployments in the release
namespace; discovery is open to every authenticated client). Retries for TIMEOUT seconds.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
TIMEOUT = float(os.environ.get("LLAMAFT_TEST_TIMEOUT", "120"))
host = os.environ["KUBERNETES_SERVICE_HOST"]
port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
base = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
with open(f"{SA}/token") as f:
    token = f.read().strip()
context = ssl.create_default_context(cafile=f"{SA}/ca.crt")


def get(path):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.load(response)


def crd_served():
    group = get(f"/apis/{os.environ['LLAMAFT_API_GROUP_VERSION']}")
    names = [r["name"] for r in group.get("resources", [])]
    return "llamafinetunes" in names, f"resources served: {names}"


def operator_ready():
    namespace, name = os.environ["LLAMAFT_NAMESPACE"], os.environ["LLAMAFT_DEPLOYMENT"]
    status = get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}").get("status", {})
    ready = status.get("readyReplicas", 0)
    return ready >= 1, f"deployment {namespace}/{name}: {ready} ready replicas"


failures = []
for check in (crd_served, operator_ready):
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            ok, detail = check()
        except (urllib.error.URLError, OSError, KeyError, ValueError) as err:
            ok, detail = False, f"{type(err).__name__}: {err}"
        if ok or time.monotonic() > deadline:
            break
        time.sleep(2)
    print(f"{'ok' if ok else 'FAIL'} {check.__name__}: {detail}", flush=True)
    if not ok:
        failures.append(check.__name__)
sys.exit(1 if failures else 0)
