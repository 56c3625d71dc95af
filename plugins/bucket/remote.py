"""A bucket in an S3-compatible object store (AWS S3, MinIO, ...), through boto3.

A ``bucket`` resource with ``s3:`` settings instead of a ``directory``:

    lake:
      type: bucket
      bucket: clickstream-lake            # the store's bucket name
      s3:
        endpoint_url: http://127.0.0.1:9000   # MinIO; omit for AWS S3
        region: us-east-1
        access_key_id: ${MINIO_ACCESS_KEY}    # omit: boto3's own chain (env, profile, role)
        secret_access_key: ${MINIO_SECRET_KEY}
        addressing_style: path                # MinIO wants path-style (default: auto)

``RemoteBucket`` reads, writes and lists objects with blocking boto3 calls:
callers in the event loop run them on a worker thread, as they do the file
operations of a directory bucket. An object is written through
``RemoteUpload`` (a temporary file, then one upload: boto3's
``upload_fileobj`` switches to a multipart upload past 8 MiB), so it is
whole or absent in the store, as a directory's ``AtomicFile`` is. boto3 is
optional (the ``s3`` extra); without it such a bucket is refused when its
resource is made, naming the extra.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from plugins.bucket.objects import BucketError, ObjectInfo, check_key

ADDRESSING = ("auto", "path", "virtual")
#: Settings of ``s3:``, with what each is.
SETTINGS = {
    "endpoint_url": "the store's S3 API (default: AWS S3 in the region)",
    "region": "the region (default us-east-1)",
    "access_key_id": "an access key (default: boto3's credential chain)",
    "secret_access_key": "its secret",
    "session_token": "a session token, with temporary credentials",
    "addressing_style": "path (MinIO), virtual or auto (default)",
}


@dataclass(frozen=True, slots=True)
class S3Settings:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: str = "auto"


def parse_s3(config: Mapping[str, Any]) -> S3Settings:
    """``s3:`` settings checked (``ValueError`` naming the setting at fault)."""
    for key, value in config.items():
        if key not in SETTINGS:
            raise ValueError(f"{key}: unknown setting (known: {', '.join(SETTINGS)})")
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: must be non-empty text")
    style = config.get("addressing_style", "auto")
    if style not in ADDRESSING:
        raise ValueError(f"addressing_style: must be one of {', '.join(ADDRESSING)}")
    url = config.get("endpoint_url")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ValueError("endpoint_url: must be an http:// or https:// URL")
    if ("access_key_id" in config) != ("secret_access_key" in config):
        raise ValueError("access_key_id: give access_key_id and secret_access_key together")
    require_boto3()
    return S3Settings(
        endpoint_url=url,
        region=config.get("region", "us-east-1"),
        access_key_id=config.get("access_key_id"),
        secret_access_key=config.get("secret_access_key"),
        session_token=config.get("session_token"),
        addressing_style=style,
    )


def require_boto3() -> None:
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ValueError(
            "a bucket in an S3 object store needs boto3, which is not installed"
            " (pip install 'pipelines[s3]')"
        ) from None


class RemoteBucket:
    """One bucket of an S3-compatible store. Every method blocks (run it on
    a worker thread); the boto3 client is made at first use and shared
    (boto3's clients are thread-safe)."""

    def __init__(self, bucket: str, settings: S3Settings) -> None:
        self.bucket = bucket
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self.settings.endpoint_url or f"AWS S3 ({self.settings.region})"
        return f"s3://{self.bucket} at {where}"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                settings = self.settings
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=settings.endpoint_url,
                    region_name=settings.region,
                    aws_access_key_id=settings.access_key_id,
                    aws_secret_access_key=settings.secret_access_key,
                    aws_session_token=settings.session_token,
                    config=Config(
                        s3={"addressing_style": settings.addressing_style},
                        retries={"mode": "standard", "max_attempts": 3},
                        connect_timeout=10,
                        read_timeout=60,
                    ),
                )
            return self._client

    def _call(self, what: str, key: str, work: Any) -> Any:
        """``work()``, its failures as ``BucketError`` naming the object."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return work()
        except ClientError as error:
            info = error.response.get("Error", {})
            code, message = info.get("Code", "Error"), info.get("Message", str(error))
            if code in ("NoSuchKey", "404"):
                message = "The specified key does not exist."
            raise BucketError(f"{what} {self.url(key)}: {code}: {message}") from None
        except (BotoCoreError, Boto3Error) as error:
            raise BucketError(f"{what} {self.url(key)}: {error}") from None

    def open(self, key: str) -> RemoteUpload:
        check_key(key)  # the same keys as a directory's, so either serves a stream
        return RemoteUpload(self, key)

    def read(self, key: str) -> bytes:
        check_key(key)
        answer = self._call(
            "reading", key, lambda: self.client().get_object(Bucket=self.bucket, Key=key)
        )
        return bytes(answer["Body"].read())

    def write(self, key: str, body: bytes) -> None:
        check_key(key)
        self._call(
            "writing",
            key,
            lambda: self.client().put_object(Bucket=self.bucket, Key=key, Body=body),
        )

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in S3's order."""

        def pages() -> list[ObjectInfo]:
            found = []
            paginator = self.client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    found.append(
                        ObjectInfo(
                            item["Key"],
                            int(item["Size"]),
                            item["LastModified"].timestamp(),
                            self.url(item["Key"]),
                            item.get("ETag"),
                        )
                    )
            return found

        return sorted(self._call("listing", prefix, pages), key=lambda i: i.key.encode())


class RemoteUpload:
    """An object written to a temporary file, uploaded whole at ``commit``
    (``AtomicFile``'s interface: ``file``, ``commit``, ``discard``)."""

    def __init__(self, bucket: RemoteBucket, key: str) -> None:
        self.bucket = bucket
        self.key = key
        self.file: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - closed by commit/discard

    def commit(self) -> None:
        try:
            self.file.seek(0)
            self.bucket._call(
                "writing",
                self.key,
                lambda: self.bucket.client().upload_fileobj(
                    self.file, self.bucket.bucket, self.key
                ),
            )
        finally:
            self.file.close()

    def discard(self) -> None:
        self.file.close()
