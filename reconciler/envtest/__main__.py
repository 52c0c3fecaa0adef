"""Command line for the local control plane: up, down, status, kubeconfig."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler.envtest.controlplane import ControlPlane, ControlPlaneError
from reconciler.envtest.settings import assets_dir, state_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="control-plane", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "kubeconfig"])
    parser.add_argument("--bin-dir", type=Path, default=None, help="etcd/kube-apiserver/kubectl")
    parser.add_argument("--state-dir", type=Path, default=None, help="data, certs, logs")
    parser.add_argument(
        "--crds", type=Path, action="append", default=[], help="CRD file or folder to install"
    )
    args = parser.parse_args(argv)
    try:
        plane = ControlPlane(
            args.bin_dir or assets_dir(), args.state_dir or state_dir(), crd_paths=args.crds
        )
        if args.command == "up":
            plane.start()
            print(f"control plane up at {plane.server}; kubeconfig: {plane.kubeconfig}")
        elif args.command == "down":
            plane.stop()
            print("control plane down")
        elif args.command == "status":
            if plane.attach():
                print(f"up at {plane.server}")
            else:
                print("down")
                return 1
        elif args.command == "kubeconfig":
            if not plane.attach():
                print("control plane is down: run `hack/control-plane up`", file=sys.stderr)
                return 1
            print(plane.kubeconfig)
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
