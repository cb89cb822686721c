"""An S3 client from the same storage options Lance gets, for listing and reading drops in a bucket.

``MMFS_STORAGE_OPTIONS`` is one JSON object of Lance (``object_store``) options: the table, the drops and
pointer rows are all read with it. This module maps the S3 keys of that object (``aws_endpoint``,
``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``, ``aws_region``,
``aws_virtual_hosted_style_request`` and their short aliases) onto a boto3 client. Keys that are not in
the options come from boto3's own chain (``AWS_*`` variables, ``~/.aws``, instance roles), as Lance's do.

The client is made in the process that uses it (sensor tick, run step) from options resolved there; it is
never pickled, logged or stored, and error messages raised from here name the bucket, never the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_ALIASES = {
    "endpoint": ("aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"),
    "key_id": ("aws_access_key_id", "access_key_id"),
    "secret": ("aws_secret_access_key", "secret_access_key"),
    "token": ("aws_session_token", "session_token", "aws_token", "token"),
    "region": ("aws_region", "region", "aws_default_region"),
    "virtual": ("aws_virtual_hosted_style_request", "virtual_hosted_style_request"),
}


def is_s3_uri(uri: str) -> bool:
    return str(uri).startswith(("s3://", "s3a://"))


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix/``: the prefix is empty or ends with ``/``."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        scheme, _, rest = str(uri).partition("://")
        if scheme not in ("s3", "s3a") or not rest:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {uri!r}")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.prefix}{name}/")

    def object_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def _pick(options: Mapping[str, str], what: str) -> str | None:
    lowered = {k.lower(): v for k, v in options.items()}
    for name in _ALIASES[what]:
        if lowered.get(name):
            return str(lowered[name])
    return None


def s3_client(options: Mapping[str, str] | None) -> Any:
    """A boto3 S3 client configured from Lance storage options (missing keys: boto3's default chain)."""
    import boto3
    from botocore.config import Config

    opts = dict(options or {})
    endpoint = _pick(opts, "endpoint")
    virtual = (_pick(opts, "virtual") or "").lower() in ("1", "true", "yes")
    style = "virtual" if virtual else ("path" if endpoint else "auto")
    config = Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=32)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=_pick(opts, "key_id"),
        aws_secret_access_key=_pick(opts, "secret"),
        aws_session_token=_pick(opts, "token"),
        region_name=_pick(opts, "region") or None,
        config=config,
    )


def error_text(e: BaseException) -> str:
    """A short, secret-free description of a boto3/botocore error (its code and message only)."""
    resp = getattr(e, "response", None)
    if isinstance(resp, dict) and resp.get("Error"):
        err = resp["Error"]
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip(": ")
    return f"{type(e).__name__}: {e}"
