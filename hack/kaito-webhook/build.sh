#!/usr/bin/env bash
# Builds the KAITO workspace-webhook test double into $1 (default: the control
# plane's assets folder, <repo>/.cache/control-plane/bin) as kaito-webhook-<KAITO
# version>, and prints that path as its last line. A binary already built from the
# same sources (go.mod, go.sum, *.go) is not rebuilt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../.cache/control-plane/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$here"
# The KAITO release whose webhook this imitates (main.go and api/ say what of it).
kaito_version=v0.12.0
bin="$out/kaito-webhook-$kaito_version"
stamp="$bin.sources"
want=$(find . -name '*.go' ! -name '*_test.go' -print0 | sort -z | xargs -0 cat go.mod go.sum | sha256sum | cut -d' ' -f1)
if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "kaito-webhook $kaito_version up to date" >&2
  echo "$bin"
  exit 0
fi
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
start=$(date +%s)
echo "building kaito-webhook $kaito_version" >&2
go build -trimpath -ldflags "-s -w" -o "$bin" .
echo "$want" > "$stamp"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
