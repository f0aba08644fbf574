"""boto3 and pyarrow access to S3 (or the local S3-compatible server), configured in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError

from core.settings import Settings, get_settings

if TYPE_CHECKING:
    import pyarrow.fs


# What boto3 raises once its retries are spent on an S3 endpoint that does not answer (refused, reset, timed out).
S3_UNREACHABLE = (BotoConnectionError, HTTPClientError)


def s3_client(settings: Settings | None = None) -> Any:
    settings = settings or get_settings()
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=client_config(compatible_server=bool(settings.s3_endpoint_url), max_attempts=settings.s3_max_attempts),
    )


def client_config(compatible_server: bool, max_attempts: int = 5) -> Config:
    # Enough connections for the parallel fetch; adaptive retries (jittered exponential backoff) ride out
    # throttling and short outages, connection errors included.
    config = Config(max_pool_connections=32, retries={"max_attempts": max_attempts, "mode": "adaptive"})
    if compatible_server:
        # boto3 >= 1.36 adds CRC checksums (aws-chunked bodies) to every upload; S3-compatible servers such as
        # the local stack's s3rver refuse them, and they add nothing over TLS-less loopback.
        config = config.merge(
            Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
        )
    return config


def arrow_filesystem(settings: Settings | None = None) -> pyarrow.fs.S3FileSystem:
    """The filesystem Ray Train persists checkpoints through (credentials from the same env as boto3)."""
    import pyarrow.fs

    settings = settings or get_settings()
    kwargs: dict[str, Any] = {"region": settings.s3_region}
    if settings.s3_endpoint_url:
        scheme, _, host = settings.s3_endpoint_url.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme, force_virtual_addressing=False)
    credentials = boto3.Session().get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
    # The AWS C++ SDK's own backoff is short (tens of milliseconds): a longer outage during a checkpoint upload
    # fails the worker, and Ray Train's worker-group restart (FailureConfig) is the longer retry.
    kwargs["retry_strategy"] = pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=settings.s3_max_attempts)
    return pyarrow.fs.S3FileSystem(**kwargs)
