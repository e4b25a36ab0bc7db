"""A stand-in for the Kubernetes API server that records the Jobs it is asked to create.

No cluster runs on our machines. dagster-k8s and the official ``kubernetes`` client run for
real against this loopback HTTP server, so what it records is exactly the JSON a cluster would
receive; the tests validate that JSON against the Kubernetes schema. Any other request is
answered 404 and recorded, so a test can assert nothing else was asked.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

JOBS = re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs$")


@dataclass
class FakeK8sApi:
    url: str
    kubeconfig: Path
    jobs: list[tuple[str, dict]] = field(default_factory=list)  # (namespace, Job body)
    unexpected: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.jobs.clear()
        self.unexpected.clear()


def _handler(api: FakeK8sApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            match = JOBS.match(self.path.split("?")[0])
            if not match:
                self._not_found()
                return
            api.jobs.append((match["ns"], body))
            created = {**body, "metadata": {**body["metadata"], "uid": str(uuid.uuid4())}}
            self._reply(201, created)

        def do_GET(self) -> None:
            self._not_found()

        def _not_found(self) -> None:
            api.unexpected.append(f"{self.command} {self.path}")
            self._reply(
                404,
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404},
            )

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    return Handler


@contextmanager
def fake_k8s_api(root: Path, namespace: str) -> Iterator[FakeK8sApi]:
    """The recorder on a free loopback port, and a kubeconfig that points at it."""
    root.mkdir(parents=True, exist_ok=True)
    api = FakeK8sApi(url="", kubeconfig=root / "kubeconfig.yaml")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    api.kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                    }
                ],
                "current-context": "fake",
            }
        )
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
