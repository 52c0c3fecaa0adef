"""The test plane itself: kill -9 of kube-apiserver, then a start on the same port.

``ControlPlane.stop_apiserver(kill=True)`` must not return while the killed process's
threads are still exiting: they hold the listening socket, and a ``start_apiserver`` in
that window failed with "bind: address already in use" (about half of the runs of six
restarts on this 2-core machine, before ``controlplane._alive`` counted a zombie leader
with live threads as alive).
"""

from __future__ import annotations

import pytest

from e2e.faults.planes import private_plane, threads_alive

RESTARTS = 6


def test_a_killed_apiserver_is_gone_before_its_successor_starts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with private_plane(tmp_path_factory, "default-restarts", crd_paths=()) as plane:
        for i in range(RESTARTS):
            if i == 1:
                plane.restart_etcd(kill=True)
            killed = plane.state.apiserver_pid
            plane.stop_apiserver(kill=True)
            assert not threads_alive(killed), "stop_apiserver returned before the process died"
            plane.start_apiserver()
