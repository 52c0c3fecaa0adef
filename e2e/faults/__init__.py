"""Fault injection: the operator under API server and etcd restarts, forced relists,
silent streams, conflicting writers, leader failover, bad input, least privilege and
shutdown — each scenario audited by every stored version and reported with figures.

Short variants run in CI; ``pytest e2e/faults --long`` adds the long ones.
"""
