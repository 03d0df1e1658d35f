"""Where datasets and artefacts live: a local path or ``s3://bucket/prefix``, behind one interface.

S3 is configured by the usual AWS environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``) plus an
endpoint override for MinIO, SeaweedFS or moto: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
(boto3 reads the same names). Credentials are read here and nowhere else, and never logged.

Publishing is "write everything under a temporary name, then commit": locally a rename, on S3 one
PUT of the object that makes the rest visible (a dataset's ``manifest.json``).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from functools import cached_property

import pyarrow.fs as pafs

from ganforge.errors import GanforgeError


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment, or None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@dataclass(frozen=True)
class Location:
    """A parsed dataset/artefact URI: ``fs`` plus a path inside it (no scheme)."""

    uri: str
    scheme: str  # "file" or "s3"
    path: str  # local absolute path, or "bucket/key/prefix"

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @cached_property
    def fs(self) -> pafs.FileSystem:
        return s3_filesystem() if self.is_s3 else pafs.LocalFileSystem()

    def join(self, *parts: str) -> str:
        """A path inside this location, for ``self.fs``."""
        return posixpath.join(self.path, *parts) if self.is_s3 else os.path.join(self.path, *parts)

    def child_uri(self, *parts: str) -> str:
        return f"s3://{self.join(*parts)}" if self.is_s3 else self.join(*parts)

    def exists(self, *parts: str) -> bool:
        info = self.fs.get_file_info(self.join(*parts))
        return info.type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.join(*parts)) as f:
            return f.read()

    def write_bytes_atomic(self, data: bytes, *parts: str) -> None:
        """Write a small object so that readers see the old version or the whole new one."""
        target = self.join(*parts)
        if self.is_s3:  # one PUT is atomic on S3
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.join(*parts), recursive=True)

    def listdir(self, *parts: str) -> list[str]:
        """Base names directly under a directory (empty when it does not exist)."""
        sel = pafs.FileSelector(self.join(*parts), allow_not_found=True)
        return sorted(posixpath.basename(i.path.rstrip("/")) for i in self.fs.get_file_info(sel))

    def remove_tree(self, *parts: str) -> None:
        path = self.join(*parts)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            self.fs.delete_dir(path)

    def move_tree(self, src: str, dst: str) -> None:
        """Move directory ``src`` to ``dst`` (both relative). A rename locally, copy+delete on S3."""
        if not self.is_s3:
            os.replace(self.join(src), self.join(dst))
            return
        sel = pafs.FileSelector(self.join(src), recursive=True)
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.File:
                rel = posixpath.relpath(info.path, self.join(src))
                self.fs.copy_file(info.path, self.join(dst, rel))
        self.fs.delete_dir(self.join(src))


def parse(uri: str) -> Location:
    """Parse ``uri`` (a local path, ``file://`` URI or ``s3://bucket/prefix``)."""
    if not uri or not uri.strip():
        raise GanforgeError("empty dataset location; pass a local directory or s3://bucket/prefix")
    if uri.startswith("s3://"):
        path = uri[len("s3://") :].strip("/")
        if not path or path.startswith("/"):
            raise GanforgeError(f"{uri!r} names no bucket; use s3://bucket/prefix")
        return Location(uri=f"s3://{path}", scheme="s3", path=path)
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise GanforgeError(f"unsupported storage scheme {scheme!r} in {uri!r}; use a local path or s3://")
    path = os.path.abspath(os.path.expanduser(uri[len("file://") :] if uri.startswith("file://") else uri))
    return Location(uri=path, scheme="file", path=path)


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem from the standard AWS environment plus the endpoint override."""
    endpoint = s3_endpoint()
    kwargs: dict = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        # MinIO, SeaweedFS and moto serve path-style URLs; virtual hosts need DNS we do not have.
        kwargs["force_virtual_addressing"] = False
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        )
    return pafs.S3FileSystem(**kwargs)


def s3_client():
    """A boto3 S3 client on the same endpoint and credentials as :func:`s3_filesystem`."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def check_writable(loc: Location) -> None:
    """Fail early, with the fix, when the destination cannot take a dataset.

    On S3 this asks boto3 for the bucket: pyarrow's own errors for a missing bucket or bad
    credentials surface only mid-write and name neither clearly.
    """
    if loc.is_s3:
        check_bucket(loc.bucket)
        return
    parent = loc.path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise GanforgeError(f"cannot write under {parent!r}; choose an --output directory you can write to")


def check_bucket(bucket: str) -> None:
    """Raise a one-line GanforgeError when ``bucket`` is missing or the credentials are refused."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = s3_endpoint() or "AWS"
    try:
        s3_client().head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise GanforgeError(
            "no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for MinIO/moto)"
        ) from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise GanforgeError(f"S3 bucket {bucket!r} does not exist at {where}; create it or fix the URI") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise GanforgeError(
                f"S3 refused the credentials for bucket {bucket!r} at {where} ({code}); "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            ) from None
        raise GanforgeError(f"S3 error for bucket {bucket!r} at {where}: {code or exc}") from None
    except BotoCoreError as exc:
        raise GanforgeError(f"cannot reach S3 at {where} ({type(exc).__name__}); check AWS_ENDPOINT_URL") from None
