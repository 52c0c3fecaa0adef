#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kubectl from the versions pinned in go.mod
# into $1 (default: <repo>/.cache/control-plane/bin). A binary that already
# exists with the pinned version is not rebuilt. The first build compiles about 2,300
# packages (several minutes on 2 cores) and says how far it is as it goes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../tools/progress.sh
source "$here/../tools/progress.sh"
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
echo "building the local control plane from its Go modules: etcd $etcd_version, kube-apiserver"
echo "and kubectl $k8s_version. The first build takes several minutes (about 8 on 2 cores);"
echo "later runs reuse the binaries in $out."
go_build_progress "etcd $etcd_version" ./etcd -ldflags "-s -w" -o "$out/etcd"
go_build_progress "kube-apiserver $k8s_version" k8s.io/kubernetes/cmd/kube-apiserver \
  -ldflags "$ldflags" -o "$out/kube-apiserver"
go_build_progress "kubectl $k8s_version" k8s.io/kubernetes/cmd/kubectl \
  -ldflags "$ldflags" -o "$out/kubectl"
echo "$want" > "$stamp"
echo "built in $(( $(date +%s) - start ))s into $out"
