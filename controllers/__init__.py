"""Operator binaries built on the reconciler framework."""
