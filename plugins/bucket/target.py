"""The ``bucket`` resource: a local directory standing for an S3 bucket, or
a bucket of an S3-compatible object store (``s3:``, ``plugins.bucket.remote``).

    resources:
      ratings:
        type: bucket
        directory: data/ratings        # relative to the config's directory
        bucket: amzn-s3-demo-bucket    # optional: the S3 name (default: the resource's name)

An object's key is a path under the directory (``plugins.bucket.objects``).
Whatever names the bucket (a Distributed Map's ItemReader or ResultWriter,
a delivery stream's BucketARN) finds it through ``plugins.bucket.lookup``;
a bucket no resource declares has a default directory there.

A bucket is not a target (a rule delivering to it is refused, as to a
connection); it holds no state besides its files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, DeliveryError, PipelinesError, Problems, Where
from pipelines.settings import Flag, Settings, Shape
from pipelines.targets import DeliveryContext, Target, TargetServices, TargetType
from plugins.bucket.lookup import NAME, is_bucket_name
from plugins.bucket.remote import RemoteBucket, parse_s3

SETTINGS_TABLE = Settings(
    {
        "directory": Shape(
            {"type": "string", "minLength": 1},
            "the directory holding the bucket's objects (a key is a path under it),"
            " relative to the config's directory",
        ),
        "bucket": Shape(
            {"type": "string", "pattern": f"^{NAME}$"},
            "the S3 bucket name definitions and delivery streams use (default: the"
            " resource's name)",
        ),
        "create": Flag(True, "make the directory when it does not exist"),
        "s3": Shape(
            {"type": "object", "additionalProperties": {"type": "string"}},
            "instead of a directory, the bucket in an S3-compatible store (AWS S3, MinIO):"
            " endpoint_url, region, access_key_id, secret_access_key, session_token,"
            " addressing_style",
        ),
    },
)


class BucketTarget(Target):
    """A bucket: a directory whose files are its objects."""

    def __init__(
        self, name: str, bucket: str, directory: Path, create: bool, remote: RemoteBucket | None
    ) -> None:
        self.name = name
        self.bucket = bucket
        self.directory = directory
        self.create = create
        #: A bucket in an S3-compatible store: objects go there, not to ``directory``.
        self.remote = remote

    @property
    def place(self) -> Path | RemoteBucket:
        return self.remote if self.remote is not None else self.directory

    async def start(self, services: TargetServices) -> None:
        if self.remote is not None:
            return  # nothing local; the store is reached at the first object
        if self.create:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise PipelinesError(
                    f"bucket {self.name}: cannot make {self.directory}: {error.strerror}"
                ) from None
        elif not self.directory.is_dir():
            raise PipelinesError(f"bucket {self.name}: {self.directory} is not a directory")

    def accept(self, where: Where, parameters: Mapping[str, Any]) -> None:
        raise ConfigError(
            where / "resource",
            f"{self.name!r} is a bucket: state machines and delivery streams read and write it",
        )

    async def deliver(self, payload: Any, context: DeliveryContext) -> Any:
        raise DeliveryError("NotATarget", f"bucket {self.name} is not a target", retryable=False)


class BucketType(TargetType):
    name = "bucket"
    description = (
        "A local directory standing for an S3 bucket (its files are the objects; read and"
        " written by state machines and delivery streams)"
    )
    arn_template = "arn:aws:s3:::{name}"
    settings = SETTINGS_TABLE
    file_settings = ("directory",)

    def create(self, name: str, config: Mapping[str, Any]) -> BucketTarget:
        directory, bucket, create, remote = checked(Where(f"target {name}"), config, name)
        return BucketTarget(name, bucket, Path(directory), create, remote)


def checked(
    where: Where, config: Mapping[str, Any], name: str
) -> tuple[str, str, bool, RemoteBucket | None]:
    """A bucket's directory, S3 name, ``create`` and remote store (``s3:``);
    every problem of its settings reported at once (``ConfigError``)."""
    problems = Problems()
    with problems:
        SETTINGS_TABLE.check_keys(where, config)
    directory, bucket = config.get("directory", ""), config.get("bucket", name)
    remote: RemoteBucket | None = None
    if "s3" in config:
        if "directory" in config:
            problems.add(ConfigError(where / "s3", "give directory or s3, not both"))
        elif not isinstance(config["s3"], Mapping):
            problems.add(ConfigError(where / "s3", "must be a mapping of settings"))
        else:
            try:
                remote = RemoteBucket(str(bucket), parse_s3(config["s3"]))
            except ValueError as exc:
                setting, _, message = str(exc).partition(": ")
                place = where / "s3" / setting if message else where / "s3"
                problems.add(ConfigError(place, message or str(exc)))
    elif not isinstance(directory, str) or not directory:
        problems.add(ConfigError(where / "directory", "must be a directory's path (or give s3:)"))
    if not is_bucket_name(bucket):
        problems.add(
            ConfigError(
                where / "bucket",
                f"{bucket!r} is not an S3 bucket name (3 to 63 lowercase letters,"
                " digits, dots, hyphens)",
            )
        )
    create = True
    with problems:
        create = bool(SETTINGS_TABLE.flag(where, config, "create"))
    problems.raise_any()
    return str(directory), str(bucket), create, remote
