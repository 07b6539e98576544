"""Pod networking for the pod runner: one Linux bridge per cluster, one network namespace per pod.

Each pod gets its own network namespace joined to the bridge by a veth pair, so two pods can both
listen on port 29500 and reach each other by IP, as in a real cluster. Names resolve through a
per-pod hosts file (`/etc/netns/<ns>/hosts`, which `ip netns exec` bind-mounts over /etc/hosts):
every pod of the runner that has a `subdomain` is listed as `<hostname>.<subdomain>[.<ns>.svc...]`.
The bridge's own address is where kube-apiserver listens, so pods reach it too.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2; scripts/testbin.sh installs iproute2.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
CLUSTER_DOMAIN = "cluster.local"


class NetworkUnavailableError(RuntimeError):
    """The machine cannot give pods their own network namespaces."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def check_available() -> None:
    if os.geteuid() != 0:
        raise NetworkUnavailableError(
            "the pod runner needs root for network and mount namespaces; run the cluster tests "
            "as root (CI does) or set LLAMAFT_SKIP_CLUSTER=1"
        )
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        raise NetworkUnavailableError("iproute2 and util-linux are needed; run scripts/testbin.sh")


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast"):
            word = line.split()[1]
        try:
            nets.append(ipaddress.IPv4Network(word, strict=False))
        except ValueError:
            continue
    return nets


@dataclass(frozen=True)
class HostEntry:
    ip: str
    names: tuple[str, ...]


class PodNetwork:
    """A bridge `lft<id>` with a random private /16; pod namespaces are `lft<id>-<n>`."""

    def __init__(self) -> None:
        check_available()
        self.id = secrets.token_hex(3)
        self.bridge = f"lft{self.id}"
        self.subnet = self._pick_subnet()
        hosts = self.subnet.hosts()
        self.gateway = str(next(hosts))
        self._free = [str(h) for h in hosts]
        self._lock = threading.Lock()
        self._counter = 0
        self._created = False

    @staticmethod
    def _pick_subnet() -> ipaddress.IPv4Network:
        used = _used_networks()
        # Random so that parallel clusters on one machine do not clash.
        for _ in range(100):
            candidate = ipaddress.IPv4Network(f"10.{random.randint(160, 254)}.0.0/16")
            if not any(candidate.overlaps(n) for n in used if n.prefixlen > 0):
                return candidate
        raise NetworkUnavailableError("no free 10.x.0.0/16 for the pod network")

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._created = True
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def destroy(self) -> None:
        for name in _ip("netns", "list", check=False).stdout.split():
            if name.startswith(f"{self.bridge}-"):
                self.remove_namespace(name)
        if self._created:
            _ip("link", "del", self.bridge, check=False)
            self._created = False

    def add_namespace(self) -> tuple[str, str]:
        """Create a pod's network namespace; returns (namespace name, pod IP)."""
        with self._lock:
            self._counter += 1
            name = f"{self.bridge}-{self._counter}"
            ip = self._free.pop(0)
        host_if, pod_if = f"h{self.id}{self._counter:x}"[:15], f"p{self.id}{self._counter:x}"[:15]
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", pod_if)
        _ip("link", "set", pod_if, "netns", name)
        _ip("link", "set", host_if, "master", self.bridge, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "set", pod_if, "name", "eth0")
        _ip("-n", name, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "route", "add", "default", "via", self.gateway)
        etc = NETNS_ETC / name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\tpod\n")
        # Unknown names fail fast (nothing listens at the gateway's port 53) instead of waiting
        # for the host's resolver, which a pod namespace cannot reach.
        (etc / "resolv.conf").write_text(
            f"nameserver {self.gateway}\noptions timeout:1 attempts:1\n"
        )
        return name, ip

    def remove_namespace(self, name: str) -> None:
        # Deleting the namespace deletes its veth end and with it the peer on the bridge.
        _ip("netns", "del", name, check=False)
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)

    def release_ip(self, ip: str) -> None:
        with self._lock:
            self._free.append(ip)

    @staticmethod
    def write_hosts(name: str, entries: list[HostEntry]) -> None:
        """Rewrite a pod's hosts file in place: `ip netns exec` bind-mounted this very inode."""
        path = NETNS_ETC / name / "hosts"
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{e.ip}\t{' '.join(e.names)}" for e in entries]
        text = "\n".join(lines) + "\n"
        try:
            with path.open("r+") as f:
                if f.read() != text:
                    f.seek(0)
                    f.write(text)
                    f.truncate()
        except FileNotFoundError:
            return


def host_names(hostname: str, subdomain: str | None, namespace: str) -> tuple[str, ...]:
    """The names a pod answers to, as cluster DNS would give them (search path included)."""
    if not subdomain:
        return (hostname,)
    fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}"
    return (
        fqdn,
        f"{hostname}.{subdomain}.{namespace}.svc",
        f"{hostname}.{subdomain}.{namespace}",
        f"{hostname}.{subdomain}",
        hostname,
    )
