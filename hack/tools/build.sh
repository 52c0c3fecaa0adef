#!/usr/bin/env bash
# Builds the tools the chart and alert tests run, from the versions pinned in the Go
# modules beside this script, into $1 (default: <repo>/.cache/control-plane/bin, next to
# the control plane's binaries):
#   helm       helm/go.mod      (helm lint/template/install/upgrade/uninstall)
#   promtool   promtool/go.mod  (promtool check rules, promtool test rules)
#   prometheus-operator-crds/   the ServiceMonitor and PrometheusRule CRDs from the
#              prometheus-operator module pinned in prometheus-operator/go.mod (only
#              downloaded, never built), so the chart's optional objects install for real
#   cert-manager-crds/          cert-manager's CRDs from the module pinned in
#              cert-manager/go.mod (only downloaded), for the CronJob example's
#              Issuer and Certificate in its server-side dry run
# Each is stamped with its version; one already there at the pinned version is kept, so
# a second run takes a second. Cold, on 2 shared cores: helm about 3.5 minutes, promtool
# 2.5 more (they share the standard library), the CRDs a second.
# To move a tool to another release, change the require line in its go.mod and run
# `go mod tidy` in that folder (in prometheus-operator/, which imports nothing, run
# `go mod download github.com/prometheus-operator/prometheus-operator` instead, which
# records the new go.sum lines).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../.cache/control-plane/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# shellcheck source=progress.sh
source "$here/progress.sh"
export CGO_ENABLED=0

# pinned MODULE_DIR MODULE: the version MODULE_DIR/go.mod requires (in a require block
# or on a one-line require).
pinned() {
  awk -v m="$2" '$1 == "require" {$1 = ""; $0 = $0} $1 == m {print $2; exit}' "$here/$1/go.mod"
}

# module_dir MODULE_DIR MODULE: where the Go module cache holds the MODULE that
# MODULE_DIR/go.mod pins (downloaded if missing); fails when it cannot be downloaded.
module_dir() {
  local dir
  dir=$(cd "$here/$1" && go mod download -json "$2" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -n "$dir" ]] || { echo "could not download $2 (pinned in hack/tools/$1/go.mod)" >&2; return 1; }
  echo "$dir"
}

# up_to_date NAME WANT: NAME is in $out with the stamp WANT.
up_to_date() { [[ -e "$out/$1" && -f "$out/.$1.version" && "$(cat "$out/.$1.version")" == "$2" ]]; }

helm_version=$(pinned helm helm.sh/helm/v4)
prometheus_version=$(pinned promtool github.com/prometheus/prometheus)
operator_version=$(pinned prometheus-operator github.com/prometheus-operator/prometheus-operator)
cert_manager_version=$(pinned cert-manager github.com/cert-manager/cert-manager)
# The SD plugins register cloud service discovery (AWS, Azure, GCE, …) that only
# `promtool check config` of a scrape config would use; without them the build
# compiles about 250 fewer packages. Rules and rule tests do not touch them.
promtool_tags=remove_all_sd

want="helm.sh/helm/v4 $helm_version"
if up_to_date helm "$want"; then
  echo "helm $helm_version up to date"
else
  echo "building helm $helm_version (a few minutes the first time; later runs reuse it)"
  (cd "$here/helm" && go_build_progress "helm $helm_version" helm.sh/helm/v4/cmd/helm \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" \
    -o "$out/helm")
  echo "$want" >"$out/.helm.version"
fi

# Prometheus 3.X.Y is the Go module's v0.3XX.Y: v0.316.0 is 3.16.0.
want="github.com/prometheus/prometheus $prometheus_version tags=$promtool_tags"
if up_to_date promtool "$want"; then
  echo "promtool $prometheus_version up to date"
else
  echo "building promtool $prometheus_version (a few minutes the first time; later runs reuse it)"
  release=${prometheus_version#v0.}
  release="${release:0:1}.$((10#${release:1:2})).${release#*.}"
  (cd "$here/promtool" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-tags=$promtool_tags" \
    go_build_progress "promtool $prometheus_version" github.com/prometheus/prometheus/cmd/promtool \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    -o "$out/promtool")
  echo "$want" >"$out/.promtool.version"
fi

want="github.com/prometheus-operator/prometheus-operator $operator_version"
if up_to_date prometheus-operator-crds "$want"; then
  echo "prometheus-operator $operator_version CRDs up to date"
else
  echo "fetching the ServiceMonitor and PrometheusRule CRDs of prometheus-operator $operator_version"
  dir=$(module_dir prometheus-operator github.com/prometheus-operator/prometheus-operator)
  rm -rf "$out/prometheus-operator-crds"
  mkdir -p "$out/prometheus-operator-crds"
  for kind in servicemonitors prometheusrules; do
    # The module cache keeps files read-only; the copies need not be.
    install -m 0644 "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" \
      "$out/prometheus-operator-crds/"
  done
  echo "$want" >"$out/.prometheus-operator-crds.version"
fi

want="github.com/cert-manager/cert-manager $cert_manager_version"
if up_to_date cert-manager-crds "$want"; then
  echo "cert-manager $cert_manager_version CRDs up to date"
else
  echo "fetching the CRDs of cert-manager $cert_manager_version"
  dir=$(module_dir cert-manager github.com/cert-manager/cert-manager)
  rm -rf "$out/cert-manager-crds"
  mkdir -p "$out/cert-manager-crds"
  install -m 0644 "$dir"/deploy/crds/*.yaml "$out/cert-manager-crds/"
  echo "$want" >"$out/.cert-manager-crds.version"
fi
