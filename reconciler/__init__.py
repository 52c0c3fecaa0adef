"""A controller-runtime style reconciler framework on anyio."""
