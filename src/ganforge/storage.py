"""Where datasets and artefacts live: a local path or ``s3://bucket/prefix``, behind one interface.

S3 is configured by the usual AWS environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``) plus an
endpoint override for MinIO, SeaweedFS or moto: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
(boto3 reads the same names). Credentials are read here and nowhere else, and never logged.

Publishing is "write everything under a temporary name, then commit": locally a rename, on S3 one
PUT of the object that makes the rest visible (a dataset's ``manifest.json``). Concurrent writers of
one location are kept apart locally by an exclusive lock (:func:`exclusive_lock`, released by the
kernel when a process dies) and on S3 by a conditional PUT of the commit object
(:func:`put_if_unchanged`): the second writer's commit fails instead of silently replacing the first.

Filesystem errors (an unreachable endpoint, refused credentials, a permission) become one-line
``GanforgeError``s naming the location and the fix (:func:`io_errors`).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import socket
import sys
import time
import uuid
from collections.abc import Iterator
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
        with io_errors(self, "read"):
            info = self.fs.get_file_info(self.join(*parts))
        return info.type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with io_errors(self, "read"), self.fs.open_input_stream(self.join(*parts)) as f:
            return f.read()

    def write_bytes_atomic(self, data: bytes, *parts: str) -> None:
        """Write a small object so that readers see the old version or the whole new one."""
        target = self.join(*parts)
        if self.is_s3:  # one PUT is atomic on S3
            with io_errors(self, "write"), self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with io_errors(self, "write"):
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # only left when writing failed

    def makedirs(self, *parts: str) -> None:
        with io_errors(self, "write"):
            self.fs.create_dir(self.join(*parts), recursive=True)

    def listdir(self, *parts: str) -> list[str]:
        """Base names directly under a directory (empty when it does not exist)."""
        sel = pafs.FileSelector(self.join(*parts), allow_not_found=True)
        with io_errors(self, "list"):
            infos = self.fs.get_file_info(sel)
        return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)

    def remove_tree(self, *parts: str) -> None:
        path = self.join(*parts)
        # Already gone is done: a concurrent ingest may clean up the same leftovers at the same time.
        with io_errors(self, "delete under"), contextlib.suppress(FileNotFoundError):
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                self.fs.delete_dir(path)

    def move_tree(self, src: str, dst: str) -> None:
        """Move directory ``src`` to ``dst`` (both relative). A rename locally, copy+delete on S3."""
        with io_errors(self, "write"):
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


def describe_io_error(loc: Location, doing: str, exc: OSError) -> str:
    """One line for an ``OSError`` from ``loc``'s filesystem: what failed, where, and the fix."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    short = text if len(text) <= 200 else text[:197] + "..."
    if loc.is_s3:
        where = s3_endpoint() or "AWS"
        upper = text.upper()
        if any(k in upper for k in ("NETWORK_CONNECTION", "CURLCODE", "COULD NOT CONNECT", "RESOLVE")):
            fix = f"is the S3 server at {where} running? set AWS_ENDPOINT_URL to the right endpoint"
            return f"cannot {doing} {loc.uri}: S3 at {where} is unreachable ({short}); {fix}"
        if any(k in upper for k in ("ACCESS_DENIED", "ACCESSDENIED", "INVALIDACCESSKEYID", "SIGNATURE", "FORBIDDEN")):
            return (f"cannot {doing} {loc.uri}: S3 at {where} refused the credentials ({short}); "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        if "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper:
            return f"cannot {doing} {loc.uri}: bucket {loc.bucket!r} does not exist at {where}; fix the URI"
        return f"cannot {doing} {loc.uri}: S3 error at {where} ({short}); check AWS_ENDPOINT_URL and credentials"
    if isinstance(exc, PermissionError):
        return f"cannot {doing} {loc.uri}: permission denied ({short}); choose a location you can access"
    return f"cannot {doing} {loc.uri} ({short}); check the path and the disk"


@contextlib.contextmanager
def io_errors(loc: Location, doing: str) -> Iterator[None]:
    """Turn ``OSError``s of the block into a one-line ``GanforgeError`` (see :func:`describe_io_error`).

    ``FileNotFoundError`` passes through: callers know what a missing file means.

    Raises:
        GanforgeError: the block raised an ``OSError`` other than ``FileNotFoundError``.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise GanforgeError(describe_io_error(loc, doing, exc)) from None


def read_with_tag(loc: Location, *parts: str) -> tuple[bytes | None, str | None]:
    """A small object's bytes and version tag (the S3 ETag; None locally), or (None, None) if absent.

    On S3 the two come from one GET, so the tag is the version of exactly these bytes.
    """
    if not loc.is_s3:
        try:
            with io_errors(loc, "read"), open(loc.join(*parts), "rb") as f:
                return f.read(), None
        except (FileNotFoundError, NotADirectoryError):
            return None, None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = loc.join(*parts).partition("/")
    try:
        got = s3_client().get_object(Bucket=bucket, Key=key)
        return got["Body"].read(), got["ETag"]
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
            return None, None
        raise GanforgeError(describe_io_error(loc, "read", OSError(str(exc)))) from None
    except BotoCoreError as exc:
        raise GanforgeError(describe_io_error(loc, "read", OSError(f"NETWORK_CONNECTION {exc}"))) from None


def put_if_unchanged(loc: Location, data: bytes, name: str, tag: str | None) -> bool:
    """Write object ``name`` on S3 only if it is still the version ``tag`` (None: only if absent).

    The compare-and-swap that lets two writers of one S3 location race safely: exactly one of two
    PUTs that expect the same version succeeds. Servers without conditional writes ignore the
    headers, and then the last writer wins.

    Returns:
        True when written; False when another writer changed (or created) the object first.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = loc.join(name).partition("/")
    condition = {"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}
    try:
        s3_client().put_object(Bucket=bucket, Key=key, Body=data, **condition)
        return True
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        # 409 ConditionalRequestConflict: AWS's answer to two conditional writes in flight at once.
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey"):
            return False
        raise GanforgeError(describe_io_error(loc, "write", OSError(str(exc)))) from None
    except BotoCoreError as exc:
        raise GanforgeError(describe_io_error(loc, "write", OSError(f"NETWORK_CONNECTION {exc}"))) from None


@contextlib.contextmanager
def exclusive_lock(directory: str, what: str, timeout: float = 3600.0, poll: float = 0.2) -> Iterator[None]:
    """Hold an exclusive lock on a local ``directory`` (created if needed) for the block.

    The lock is ``flock`` on ``directory/.lock``, so the kernel drops it when its holder dies (kill -9
    included): no stale locks to break. The file records who holds it; a waiter says so once on
    stderr. The holder deletes the file before releasing, and a waiter that then wins the old,
    deleted file notices and tries again, so two processes never both hold the lock.

    Args:
        directory: the directory to lock.
        what: what the holder is doing, for messages (``"ingest"``).
        timeout: seconds to wait for another holder before giving up.
        poll: seconds between tries while waiting.

    Raises:
        GanforgeError: another process held the lock for longer than ``timeout``.
    """
    import fcntl

    path = os.path.join(directory, ".lock")
    deadline, said = time.monotonic() + timeout, False
    while True:
        os.makedirs(directory, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the directory was removed between the two calls; make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not isinstance(exc, BlockingIOError):  # e.g. ENOLCK: a filesystem without locks
                os.close(fd)
                with contextlib.suppress(OSError):  # nobody can hold a lock here: leave no file behind
                    os.unlink(path)
                raise GanforgeError(
                    f"cannot lock {path} ({exc.strerror or exc}); write to a local disk or to s3:// instead"
                ) from None
            holder = _lock_holder(fd)
            os.close(fd)
            if time.monotonic() > deadline:
                raise GanforgeError(
                    f"{directory} is locked by another {what} ({holder}) for more than {timeout:.0f} s; wait for it "
                    f"to finish, or stop it and re-run"
                ) from None
            if not said:
                print(f"waiting for another {what} into {directory} ({holder})", file=sys.stderr, flush=True)
                said = True
            time.sleep(poll)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # we locked a file its holder had already deleted: start again
            os.close(fd)
            continue
        break
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # closing releases the flock


def _lock_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "holder unknown"
    except OSError:
        return "holder unknown"
