"""An S3-compatible server (moto) on 127.0.0.1 with one bucket, for tests and benchmarks; stopped by its pid."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_s3(bucket: str = "mmfs", key_id: str = "testing", secret: str = "testing") -> Iterator[dict[str, str]]:
    """Yield the Lance storage options that reach a fresh moto server holding ``bucket`` (moto accepts any
    credentials: ``key_id``/``secret`` let a test look for distinctive ones where they must not be)."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield {"aws_access_key_id": key_id, "aws_secret_access_key": secret, "aws_endpoint": endpoint,
               "aws_region": "us-east-1", "allow_http": "true"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
