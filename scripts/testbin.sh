#!/usr/bin/env bash
# Builds the binaries of the cluster test harness from their upstream Go modules, once, and
# caches them by version:
#
#   kube-apiserver, kube-controller-manager, kube-scheduler  k8s.io/kubernetes  v1.32.4
#   etcd                                                      go.etcd.io/etcd     v3.5.16
#   helm                                                      helm.sh/helm/v3     v3.16.4
#   kwok                                                      sigs.k8s.io/kwok    v0.6.1
#
# Usage: scripts/testbin.sh [--print-dir] [--regen]
#   (no flag)    build what is missing, print the build time of each binary; the last stdout
#                line is the bin dir
#   --print-dir  print the bin dir and exit (builds nothing; exit 1 if a binary is missing)
#   --regen      regenerate tests/cluster/gomod/*/go.{mod,sum} after changing a version below
#
# The module pins (go.mod, go.sum) live in tests/cluster/gomod/ so module hashes stay fixed; the
# build runs in a throwaway copy under the cache dir:
#   ${LLAMAFT_TESTBIN_CACHE:-$HOME/.cache/llamaft-testbin}/<version>/bin
# A cold build takes ~14 min on 2 cores (most of it kube-apiserver); a warm rerun, seconds.
# kind/envtest binaries cannot be downloaded here and there is no container runtime, hence this.
set -euo pipefail

K8S_VERSION=v1.32.4
K8S_STAGING_VERSION=v0.32.4
ETCD_VERSION=v3.5.16
HELM_VERSION=v3.16.4
KWOK_VERSION=v0.6.1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GOMOD_DIR="$REPO_ROOT/tests/cluster/gomod"
CACHE_ROOT="${LLAMAFT_TESTBIN_CACHE:-$HOME/.cache/llamaft-testbin}"
VERSION="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_kwok-${KWOK_VERSION}"
VERSION_DIR="$CACHE_ROOT/$VERSION"
BIN_DIR="$VERSION_DIR/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd helm kwok)

# The checksum database is unreachable from our machines; go.sum (committed) still pins hashes.
export GOSUMDB=off
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local
export CGO_ENABLED=0

log() { echo "testbin: $*" >&2; }

all_present() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

case "${1:-}" in
  --print-dir)
    if all_present; then echo "$BIN_DIR"; exit 0; fi
    log "binaries missing under $BIN_DIR; run scripts/testbin.sh"
    exit 1
    ;;
  --regen) REGEN=1 ;;
  "") REGEN=0 ;;
  *) log "unknown argument: $1"; exit 2 ;;
esac

# Debian packages the pod runner needs (network namespaces); CI starts from a fresh machine.
ensure_debian_packages() {
  local missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "please install: ${missing[*]}"
    return 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

regen() {
  # Rewrites the pins from the versions above; review and commit the diff.
  local staging
  staging=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  sed -i -E "s#^(\t)go.etcd.io/etcd/server/v3 v.*#\1go.etcd.io/etcd/server/v3 $ETCD_VERSION#;
             s#^(\t)k8s.io/kubernetes v.*#\1k8s.io/kubernetes $K8S_VERSION#;
             s#=> (k8s.io/[a-z-]+) v.*#=> \1 $K8S_STAGING_VERSION#" "$GOMOD_DIR/kubernetes/go.mod"
  # Every staging module the release replaces must be replaced by us too.
  local m
  for m in $(grep -E '=> \./staging' "$staging" | awk '{print $1}'); do
    grep -q "$m => " "$GOMOD_DIR/kubernetes/go.mod" || { log "add a replace for $m"; exit 1; }
  done
  sed -i -E "s#^require helm.sh/helm/v3 .*#require helm.sh/helm/v3 $HELM_VERSION#" "$GOMOD_DIR/helm/go.mod"
  sed -i -E "s#^require sigs.k8s.io/kwok .*#require sigs.k8s.io/kwok $KWOK_VERSION#" "$GOMOD_DIR/kwok/go.mod"
  local d
  for d in kubernetes helm kwok; do (cd "$GOMOD_DIR/$d" && go mod tidy); done
  log "regenerated $GOMOD_DIR; commit go.mod and go.sum"
}

# Builds one binary in a throwaway copy of its pinned module; prints its build time.
build() {
  local name=$1 module=$2 pkg=$3 ldflags=$4
  if [[ -x "$BIN_DIR/$name" ]]; then
    log "$name: cached"
    return 0
  fi
  local src="$VERSION_DIR/src/$module"
  rm -rf "$src"
  mkdir -p "$src"
  cp "$GOMOD_DIR/$module/go.mod" "$GOMOD_DIR/$module/go.sum" "$GOMOD_DIR/$module/tools.go" "$src/"
  local start=$SECONDS
  log "$name: building $pkg"
  # nice: the machine is shared with tests and editors; the build is a background chore.
  (cd "$src" && nice -n 10 go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN_DIR/$name.tmp" "$pkg")
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
  log "$name: built in $((SECONDS - start)) s ($(du -h "$BIN_DIR/$name" | cut -f1))"
}

command -v go >/dev/null 2>&1 || { log "go is required (https://go.dev/dl), found none on PATH"; exit 1; }

if ((REGEN)); then regen; exit 0; fi

ensure_debian_packages
mkdir -p "$BIN_DIR"
total_start=$SECONDS

# Without these the binaries report v0.0.0-master+$Format:%H$, which kubectl and helm's
# kubeVersion constraints cannot parse.
k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done

build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
build etcd kubernetes go.etcd.io/etcd/server/v3 ""
build helm helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"

rm -rf "$VERSION_DIR/src"
log "all binaries ready in $((SECONDS - total_start)) s"
echo "$BIN_DIR"
