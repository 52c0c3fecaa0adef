"""A real etcd + kube-apiserver for tests (envtest)."""
