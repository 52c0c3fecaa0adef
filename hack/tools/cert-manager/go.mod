// Pins the cert-manager release whose CRDs (deploy/crds/ in its module) hack/tools/build.sh
// installs for the CronJob example's config test (its Issuer and Certificate, applied in
// a server-side dry run). Nothing here is built: the module is only downloaded, and
// go.sum makes the download verifiable. Do not run go mod tidy here (no package imports it).
module tools/cert-manager

go 1.26.0

require github.com/cert-manager/cert-manager v1.21.0
