"""The bucket plugin: one lookup from a bucket's name or ARN to its
directory (a declared ``bucket`` resource's, else ``<state dir>/buckets/<name>``),
and objects as files (keys kept inside their bucket, atomic writes, S3's
listing order), as states' ItemReader/ResultWriter and firehose use them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipelines.runtime import Runtime
from plugins.bucket.lookup import (
    Buckets,
    bucket_name,
    buckets_of,
    buckets_of_config,
    default_root,
)
from plugins.bucket.objects import (
    BucketError,
    is_temporary,
    list_objects,
    object_path,
    read_object,
    write_object,
)

from .firehose_helpers import firehose_plugins

ESCAPING = ["../x", "a/../../x", "/etc/passwd", "a/./b", "", "a/", "..", "a/..", "nul\0"]


def test_a_bucket_is_named_by_its_name_or_its_arn() -> None:
    assert bucket_name("amzn-s3-demo-bucket") == "amzn-s3-demo-bucket"
    assert bucket_name("arn:aws:s3:::amzn-s3-demo-bucket") == "amzn-s3-demo-bucket"
    assert bucket_name("arn:aws-cn:s3:::bucket_name") == "bucket_name"
    for bad in ("Upper", "ab", "arn:aws:sqs:us-east-1:1:q", "arn:aws:s3:::x/y", "../up"):
        with pytest.raises(BucketError, match="is not an S3 bucket's name or ARN"):
            bucket_name(bad)


def test_a_declared_bucket_is_its_directory_and_the_others_are_under_the_state(
    tmp_path: Path,
) -> None:
    root = default_root(tmp_path / "state.db")
    assert root == tmp_path / "buckets"
    buckets = Buckets({"ratings": tmp_path / "data"}, root)
    assert buckets.directory("ratings") == tmp_path / "data"
    assert buckets.directory("arn:aws:s3:::ratings") == tmp_path / "data"
    assert buckets.directory("exports") == tmp_path / "buckets" / "exports"
    assert buckets.directory("arn:aws:s3:::exports") == tmp_path / "buckets" / "exports"
    # Without a state file (PostgreSQL, or none): the working directory's buckets/.
    assert default_root("postgresql://localhost/db") == Path("buckets")
    assert default_root(None) == Path("buckets")
    # Without a default root an undeclared bucket is unknown.
    with pytest.raises(BucketError, match="no bucket named 'exports' in this runtime"):
        Buckets({"ratings": tmp_path}).directory("exports")
    # An undeclared name that is no bucket name never becomes a path.
    with pytest.raises(BucketError):
        buckets.directory("../../etc")


@pytest.mark.parametrize("key", ESCAPING)
def test_a_key_that_would_leave_its_bucket_is_refused(tmp_path: Path, key: str) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (tmp_path / "x").write_text("outside")
    with pytest.raises(BucketError, match="does not name a file inside its bucket"):
        object_path(bucket, key)
    with pytest.raises(BucketError, match="does not name a file inside its bucket"):
        write_object(bucket, key, b"written")
    with pytest.raises(BucketError, match="does not name a file inside its bucket"):
        read_object(bucket, key)
    assert (tmp_path / "x").read_text() == "outside"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bucket", "x"]


def test_objects_are_written_whole_and_listed_in_s3s_order(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    keys = ["é", "z", "a/b", "a-c", "B", "a/x"]
    for key in keys:
        write_object(bucket, key, key.encode())
    write_object(bucket, "z", b"replaced")  # a second write replaces the object
    # A writer's temporary file (a crash mid-write) is no object.
    (bucket / ".z.0123.tmp~").write_bytes(b"half")
    assert is_temporary(".z.0123.tmp~") and not is_temporary(".z")
    listed = list_objects(bucket, etags=True)
    # S3 lists keys by their UTF-8 bytes: "B" < "a-c" < "a/b" < "a/x" < "z" < "é".
    assert [info.key for info in listed] == ["B", "a-c", "a/b", "a/x", "z", "é"]
    z = next(info for info in listed if info.key == "z")
    assert read_object(bucket, "z") == b"replaced" and z.size == len(b"replaced")
    assert z.etag == f'"{hashlib.md5(b"replaced", usedforsecurity=False).hexdigest()}"'
    assert z.item()["Etag"] == z.etag and z.item()["StorageClass"] == "STANDARD"
    assert [info.key for info in list_objects(bucket, "a/")] == ["a/b", "a/x"]
    assert list_objects(bucket, "a/")[0].etag is None  # not read unless asked for
    # Nothing but the objects and the temporary file left above.
    assert sorted(p.name for p in bucket.iterdir()) == [".z.0123.tmp~", "B", "a", "a-c", "z", "é"]
    with pytest.raises(BucketError, match=r"The specified key does not exist\. \(Bucket: b"):
        read_object(bucket, "missing", "b")
    with pytest.raises(BucketError, match="The specified bucket does not exist"):
        list_objects(tmp_path / "nowhere", bucket="nowhere")


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    (bucket / "taken").mkdir(parents=True)  # a directory where the object must go
    with pytest.raises(BucketError, match="cannot write"):
        write_object(bucket, "taken", b"x")
    assert [p.name for p in bucket.iterdir()] == ["taken"]
    assert not any(is_temporary(name) for _, _, names in os.walk(bucket) for name in names)


async def test_a_runtimes_buckets_are_its_bucket_resources_and_the_default(
    tmp_path: Path,
) -> None:
    runtime = Runtime(state_path=tmp_path / "state.db", plugins=firehose_plugins())
    runtime.add_resource("data", "bucket", {"directory": str(tmp_path / "d")})
    runtime.add_resource(
        "named", "bucket", {"directory": str(tmp_path / "n"), "bucket": "amzn-s3-demo-bucket"}
    )
    async with runtime:
        buckets = buckets_of(runtime)
        assert buckets.directory("data") == tmp_path / "d"
        assert buckets.directory("amzn-s3-demo-bucket") == tmp_path / "n"
        # The resource's name is not the bucket's when it names another.
        assert buckets.directory("named") == tmp_path / "buckets" / "named"
        assert buckets.directory("elsewhere") == tmp_path / "buckets" / "elsewhere"
        await buckets.put_object("elsewhere", "k/v.json", b"{}")
        await buckets.put_object("arn:aws:s3:::data", "one", b"1")
        assert (tmp_path / "buckets" / "elsewhere" / "k" / "v.json").read_bytes() == b"{}"
        assert await buckets.get_object("data", "one") == b"1"
        listed = await buckets.list_objects("data")
        assert [(info.key, info.size) for info in listed] == [("one", 1)]
        with pytest.raises(BucketError, match="does not name a file"):
            await buckets.put_object("data", "../escape", b"x")
        assert not (tmp_path / "escape").exists()


def test_a_configs_buckets_are_found_beside_it(tmp_path: Path) -> None:
    from pipelines.config import load_config

    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "resources:\n"
        "  lake: {type: bucket, directory: data/lake}\n"
        "  other: {type: bucket, directory: /abs, bucket: amzn-s3-demo-bucket}\n"
        "  work: {type: queue}\n"
    )
    buckets = buckets_of_config(load_config([path]), tmp_path / "state.db")
    assert buckets.directory("lake") == tmp_path / "data" / "lake"
    assert buckets.directory("amzn-s3-demo-bucket") == Path("/abs")
    assert buckets.directory("work") == tmp_path / "buckets" / "work"
