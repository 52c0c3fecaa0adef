// Pins the prometheus-operator release whose ServiceMonitor and PrometheusRule CRDs
// (example/prometheus-operator-crd/ in its module) hack/tools/build.sh installs for
// the chart tests. Nothing here is built: the module is only downloaded, and go.sum
// makes the download verifiable. Do not run go mod tidy here (no package imports it).
module tools/prometheus-operator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
