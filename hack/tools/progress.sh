# Progress for the slow steps of a first run; sourced by hack/controlplane/build.sh,
# hack/tools/build.sh, hack/run, hack/test and hack/control-plane. A cold build of
# kube-apiserver or helm compiles one to two thousand packages over several minutes.
# `go list -deps` says beforehand which packages are stale (not in the build cache for
# these flags), and `go build -v` names each package as it compiles it (cached ones are
# not named), so "n/N" counts real work.

# go_build_progress LABEL PKG [go build flags…]: go build PKG with the flags, printing
# "LABEL: n/N packages (p%), elapsed" at most every PROGRESS_EVERY seconds (default 15)
# and passing go's own errors through. The build's exit status is the function's.
go_build_progress() {
  local label=$1 pkg=$2
  shift 2
  local start=$SECONDS total
  echo "$label: resolving packages (the first run also downloads the Go modules)" >&2
  total=$(go list -trimpath -deps -f '{{if .Stale}}stale{{end}}' "$pkg" | grep -c stale) || true
  echo "$label: compiling $total packages, then linking ($(_elapsed "$start") so far)" >&2
  local - status=0
  set -o pipefail
  go build -v -trimpath "$@" "$pkg" 2>&1 >/dev/null | _count_packages "$label" "$total" "$start" ||
    status=$?
  if [[ $status -eq 0 ]]; then
    echo "$label: done in $(_elapsed "$start")" >&2
  else
    echo "$label: go build failed after $(_elapsed "$start")" >&2
  fi
  return "$status"
}

# Reads `go build -v` output: a bare import path per compiled package; anything else
# (compiler errors, "# pkg" headers) is go's own message and is printed as it is. One
# package can take half a minute (k8s.io/api/core/v1), so a quiet spell reports too.
_count_packages() {
  local label=$1 total=$2 start=$3 every=${PROGRESS_EVERY:-15}
  local n=0 last=$SECONDS line status
  while true; do
    status=0
    IFS= read -r -t "$every" line || status=$?
    if ((status > 128)); then # timed out: nothing compiled for a while
      last=$SECONDS
      if ((n >= total)); then
        echo "$label: linking, $(_elapsed "$start")" >&2
      else
        _report "$label" "$n" "$total" "$start"
      fi
      continue
    fi
    ((status == 0)) || break # end of output
    if [[ "$line" =~ ^[A-Za-z0-9_.~/+-]+$ ]]; then
      n=$((n + 1))
      if ((n == total)); then
        # The main package compiles last; linking a large binary takes a while.
        _report "$label" "$n" "$total" "$start"
        echo "$label: linking" >&2
      elif ((SECONDS - last >= every)); then
        last=$SECONDS
        _report "$label" "$n" "$total" "$start"
      fi
    else
      printf '%s\n' "$line" >&2
    fi
  done
}

_report() {
  local label=$1 n=$2 total=$3 start=$4 pct=100
  ((total > 0)) && pct=$((n * 100 / total))
  ((pct > 100)) && pct=100
  echo "$label: $n/$total packages ($pct%), $(_elapsed "$start")" >&2
}

_elapsed() {
  local s=$((SECONDS - $1))
  if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# say_if_slow MESSAGE CMD…: run CMD; when it is still running a second later, print
# MESSAGE first, so that a step which is silent while it works (pip) does not look hung
# and a step with nothing to do stays quiet. CMD's exit status is the function's.
say_if_slow() {
  local message=$1
  shift
  (sleep 1 && echo "$message" >&2) &
  local notice=$! status=0
  "$@" || status=$?
  kill "$notice" 2>/dev/null || true
  wait "$notice" 2>/dev/null || true
  return "$status"
}
