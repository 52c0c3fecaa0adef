//go:build tools

// Package tools records the main package this module builds, so that go mod tidy
// keeps its dependencies at the versions Prometheus's own go.mod asks for.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
