"""kubernetes_asyncio is loaded without its generated API, which stays usable on demand."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_framework_does_not_import_generated_models() -> None:
    out = _run("""
        import sys
        import reconciler, controllers.workspace.operator
        heavy = [m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")
                 or m.startswith("kubernetes_asyncio.client.api.")]
        print(len(heavy))
    """)
    assert out.strip() == "0"


def test_generated_api_still_works_for_other_code() -> None:
    out = _run("""
        import reconciler
        from kubernetes_asyncio import client, watch
        from kubernetes_asyncio.client import CoreV1Api, V1Pod
        from kubernetes_asyncio.client.models import V1ConfigMap
        import kubernetes_asyncio
        assert kubernetes_asyncio.client is client
        assert client.V1Pod is V1Pod and client.CoreV1Api is CoreV1Api
        pod = V1Pod(metadata=client.V1ObjectMeta(name="p"))
        print(pod.metadata.name, V1ConfigMap.__name__, watch.Watch.__name__)
    """)
    assert out.split() == ["p", "V1ConfigMap", "Watch"]


def test_kubeconfig_loading_works(tmp_path: object) -> None:
    out = _run("""
        import asyncio, base64, tempfile, os, yaml
        from reconciler.client import Client
        ca = base64.b64encode(b"not a real CA").decode()
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
               "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
               "users": [{"name": "u", "user": {"token": "abc"}}],
               "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
        path = os.path.join(tempfile.mkdtemp(), "kc")
        open(path, "w").write(yaml.safe_dump(cfg))
        async def main():
            c = await Client.from_config(path)
            print(c.host)
            await c.close()
        asyncio.run(main())
    """)
    assert out.strip() == "https://127.0.0.1:6443"


def test_no_bare_package_outlives_the_framework_import() -> None:
    # Invariant 1 of reconciler._kubeconfig: the bare packages exist only while it imports.
    out = _run("""
        import sys
        import reconciler.client
        print(sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes_asyncio"))
    """)
    assert out.strip() == "[]"


def test_an_earlier_full_import_is_used_as_is() -> None:
    # Invariant 3: with the real package already loaded, the framework shares it.
    out = _run("""
        import kubernetes_asyncio
        from kubernetes_asyncio.client import Configuration
        from reconciler import _kubeconfig
        print(_kubeconfig.Configuration is Configuration, hasattr(kubernetes_asyncio, "client"))
    """)
    assert out.split() == ["True", "True"]
