"""A real S3-compatible server on loopback for the tests: moto's ``ThreadedMotoServer``
(the same HTTP API as AWS S3: boto3, s3fs and ``mlflow server`` talk to it as they would to
a bucket). Clients find it the standard way: ``AWS_ENDPOINT_URL`` plus static credentials,
the environment a user sets for MinIO, Ceph or a real bucket."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from refsam.services import environment, s3_client, s3_client_env


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """The variables a client process needs (merge into a subprocess environment)."""
        return s3_client_env(self.endpoint)

    def client(self):  # noqa: ANN201 (a boto3 S3 client)
        """A boto3 S3 client of this server, with the static credentials."""
        return s3_client(self.endpoint)

    def new_bucket(self, prefix: str = "refsam") -> str:
        """Create an empty bucket with a unique name; returns its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start the server on a free loopback port; stop it on exit."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


@contextlib.contextmanager
def client_environment(server: S3Server) -> Iterator[None]:
    """Set the client variables in this process (and its children) for the block."""
    with environment(server.env):
        yield
