#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kubectl from the versions pinned in go.mod
# into $1 (default: <repo>/.cache/control-plane/bin). A binary that already
# exists with the pinned version is not rebuilt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../.cache/control-plane/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$here"
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' go.mod)
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' go.mod)
minor=${k8s_version#v1.}; minor=${minor%%.*}
stamp="$out/.versions"
want="kubernetes=$k8s_version etcd=$etcd_version"
if [[ -x "$out/etcd" && -x "$out/kube-apiserver" && -x "$out/kubectl" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "control plane binaries up to date ($want)"
  exit 0
fi
export CGO_ENABLED=0
# Same version stamps the Kubernetes release build sets, so --version and the
# /version endpoint report the real release instead of v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
start=$(date +%s)
echo "building etcd $etcd_version"
go build -trimpath -ldflags "-s -w" -o "$out/etcd" ./etcd
echo "building kube-apiserver $k8s_version"
go build -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "building kubectl $k8s_version"
go build -trimpath -ldflags "$ldflags" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
echo "$want" > "$stamp"
echo "built in $(( $(date +%s) - start ))s into $out"
