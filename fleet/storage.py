"""Object storage behind one small interface: `s3://bucket/key` through boto3, or a local folder.

Every other module reads and writes audio, adapters and reports through `ObjectStore`, so the
embedded mode (a folder) and production (any S3-compatible store, by endpoint URL) run the same
code. Which of the two serves is an explicit setting (`APA_STORAGE_BACKEND`), never guessed from the
credentials that happen to be set: with IAM roles nothing is set, and a guess would put adapters on
one pod's own disk. In the local backend every tenant has its own folder (`tenants/<tenant id>/`,
see `for_tenant`), so one tenant can never name another's files. Errors are specific so callers
can tell bad input (missing object, too large, denied) from a transient fault worth a retry
(`StorageUnavailable`) and from a setting that is missing (`StorageNotConfigured`).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from fleet.settings import Settings


class StorageError(Exception):
    code = "storage_error"

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(f"{uri}: {message}")
        self.uri = uri


class InvalidObjectURI(StorageError):
    code = "invalid_uri"


class ObjectNotFound(StorageError):
    code = "object_not_found"


class AccessDenied(StorageError):
    code = "access_denied"


class ObjectTooLarge(StorageError):
    code = "object_too_large"


class StorageUnavailable(StorageError):
    """A transient fault (network, throttling, 5xx): retrying may succeed."""

    code = "storage_unavailable"


class StorageNotConfigured(StorageUnavailable):
    """The service lacks a setting (no S3 backend, no credentials): only an operator can fix it.

    Callers that answer a person (the gateway, the CLI) report it as a configuration error naming
    `setting`, never as a 503 to retry. It stays a `StorageUnavailable` for the workers, so rows
    already accepted wait for the fix instead of failing for a fault that is not theirs."""

    code = "storage_not_configured"

    def __init__(self, uri: str, message: str, setting: str) -> None:
        super().__init__(uri, message)
        self.reason = message
        self.setting = setting


BACKENDS = ("local", "s3")
TENANTS_FOLDER = "tenants"


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int


@dataclass(frozen=True)
class ObjectRef:
    scheme: str  # "s3" or "file"
    bucket: str  # empty for local objects
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else f"file://{self.key}"


def parse_uri(uri: str) -> ObjectRef:
    """`s3://bucket/key`, `file:///abs/path`, or a plain path (local store)."""
    if not uri or not isinstance(uri, str):
        raise InvalidObjectURI(str(uri), "empty object URI")
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        key = parts.path.lstrip("/")
        if not parts.netloc:
            raise InvalidObjectURI(uri, "s3 URI has no bucket")
        return ObjectRef("s3", parts.netloc, key)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidObjectURI(uri, "file URI must not name a host")
        return ObjectRef("file", "", parts.path)
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        return ObjectRef("file", "", uri)
    raise InvalidObjectURI(uri, f"unsupported scheme {parts.scheme!r} (use s3:// or a local path)")


_CLIENT_LOCK = threading.Lock()


class ObjectStore:
    """Reads and writes objects by URI; local paths are confined to `root`."""

    def __init__(
        self,
        root: Path,
        *,
        backend: str = "local",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown storage backend {backend!r}; use one of {BACKENDS}")
        self.backend = backend
        self.root = Path(root).resolve()
        self._s3_kwargs = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._connect_timeout_s = connect_timeout_s
        self._max_attempts = max_attempts
        self._client = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        return cls(
            settings.effective_storage_root,
            backend=settings.storage_backend,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret,
            connect_timeout_s=settings.s3_connect_timeout_s,
            max_attempts=settings.s3_max_attempts,
        )

    # ---- s3 -------------------------------------------------------------------------------
    def for_tenant(self, tenant_id: uuid.UUID) -> ObjectStore:
        """The same store with local paths confined to this tenant's own folder (relative paths
        resolve inside it); s3:// URIs are unchanged (buckets are checked against the tenant's list)."""
        return replace_root(self, self.root / TENANTS_FOLDER / str(uuid.UUID(str(tenant_id))))

    @property
    def s3(self):  # boto3 client, created lazily: the local mode never imports boto3's config
        if self.backend != "s3":
            raise StorageNotConfigured(
                "s3://", "s3:// objects need APA_STORAGE_BACKEND=s3 (this service keeps objects in the local "
                f"folder {self.root}; use a local path instead)", "APA_STORAGE_BACKEND",
            )
        if self._client is None:
            with _CLIENT_LOCK:  # the worker's fetch threads may ask at once: one client, not several
                if self._client is None:
                    self._client = self._new_s3_client()
        return self._client

    def _new_s3_client(self):
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=self._connect_timeout_s,
            read_timeout=30,
            retries={"max_attempts": self._max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            # Kept-alive connections for every thread that may call at once (the gateway's
            # pool has 40): past the default 10, urllib3 dropped each extra connection after
            # use, so most HEADs paid a new TCP connection (issue 10).
            max_pool_connections=64,
            tcp_keepalive=True,
        )
        return boto3.client("s3", config=config, **self._s3_kwargs)

    def _s3_error(self, uri: str, exc: Exception) -> StorageError:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        if isinstance(exc, StorageNotConfigured):
            return StorageNotConfigured(uri, exc.reason, exc.setting)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageNotConfigured(
                uri, f"no usable S3 credentials ({exc}): set APA_S3_ACCESS_KEY_ID and APA_S3_SECRET_ACCESS_KEY "
                "or give the process an IAM role", "APA_S3_ACCESS_KEY_ID",
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                return ObjectNotFound(uri, "no such object" if code != "NoSuchBucket" else "no such bucket")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "RequestTimeTooSkewed"):
                # our credentials, not the object: a rotation or clock fault must not fail submissions
                return StorageUnavailable(uri, f"S3 refused the service's credentials ({code})")
            if code in ("AccessDenied", "403", "Forbidden"):
                return AccessDenied(uri, f"access denied ({code})")
            if status and 400 <= status < 500 and status not in (408, 429):
                return StorageError(uri, f"request rejected ({code or status})")
            return StorageUnavailable(uri, f"S3 error {code or status}")
        if isinstance(exc, BotoCoreError):
            return StorageUnavailable(uri, f"S3 unreachable: {exc}")
        return StorageUnavailable(uri, str(exc))

    # ---- local ----------------------------------------------------------------------------
    def _local_path(self, ref: ObjectRef, uri: str) -> Path:
        path = Path(ref.key)
        path = (path if path.is_absolute() else self.root / path).resolve()
        if path != self.root and self.root not in path.parents:
            raise AccessDenied(uri, f"local objects must lie under {self.root}")
        return path

    # ---- API ------------------------------------------------------------------------------
    def head(self, uri: str) -> ObjectInfo:
        ref = parse_uri(uri)
        if ref.scheme == "s3":
            try:
                meta = self.s3.head_object(Bucket=ref.bucket, Key=ref.key)
            except Exception as exc:
                raise self._s3_error(uri, exc) from exc
            return ObjectInfo(uri, int(meta["ContentLength"]))
        path = self._local_path(ref, uri)
        if not path.is_file():
            raise ObjectNotFound(uri, "no such object")
        return ObjectInfo(uri, path.stat().st_size)

    def get(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        """Whole object; `max_bytes` refuses larger objects before downloading them.

        One request on S3: the GET's Content-Length is checked before its body is read (a HEAD
        first cost each scoring job a second round trip, issue 10's queue overhead)."""
        ref = parse_uri(uri)
        if ref.scheme == "s3":
            try:
                response = self.s3.get_object(Bucket=ref.bucket, Key=ref.key)
            except Exception as exc:
                raise self._s3_error(uri, exc) from exc
            size = response.get("ContentLength")
            if max_bytes is not None and size is not None and int(size) > max_bytes:
                response["Body"].close()
                raise ObjectTooLarge(uri, f"{size} bytes is over the limit of {max_bytes}")
            try:
                body = response["Body"].read() if max_bytes is None else response["Body"].read(max_bytes + 1)
            except Exception as exc:
                raise self._s3_error(uri, exc) from exc
        else:
            path = self._local_path(ref, uri)
            if not path.is_file():
                raise ObjectNotFound(uri, "no such object")
            if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
                raise ObjectTooLarge(uri, f"{size} bytes is over the limit of {max_bytes}")
            body = path.read_bytes()
        if max_bytes is not None and len(body) > max_bytes:
            raise ObjectTooLarge(uri, f"{len(body)} bytes is over the limit of {max_bytes}")
        return body

    def put(self, uri: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        ref = parse_uri(uri)
        if ref.scheme == "s3":
            try:
                self.s3.put_object(Bucket=ref.bucket, Key=ref.key, Body=data, ContentType=content_type)
            except Exception as exc:
                raise self._s3_error(uri, exc) from exc
        else:
            path = self._local_path(ref, uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        return ObjectInfo(uri, len(data))

    def list(self, prefix_uri: str) -> list[ObjectInfo]:
        """Objects whose URI starts with `prefix_uri`, sorted by URI."""
        ref = parse_uri(prefix_uri)
        if ref.scheme == "s3":
            out: list[ObjectInfo] = []
            try:
                pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=ref.bucket, Prefix=ref.key)
                for page in pages:
                    for item in page.get("Contents", []):
                        out.append(ObjectInfo(f"s3://{ref.bucket}/{item['Key']}", int(item["Size"])))
            except Exception as exc:
                raise self._s3_error(prefix_uri, exc) from exc
            return sorted(out, key=lambda o: o.uri)
        base = self._local_path(ref, prefix_uri)
        folder = base if base.is_dir() else base.parent
        if not folder.is_dir():
            return []
        prefix = str(base)
        found = [
            ObjectInfo(str(p), p.stat().st_size)
            for p in folder.rglob("*")
            if p.is_file() and str(p).startswith(prefix) and not p.name.endswith(".part")
        ]
        return sorted(found, key=lambda o: o.uri)

    def list_relative(self, prefix_uri: str) -> dict[str, str]:
        """Objects under the folder `prefix_uri` as {path relative to it: URI}, for s3 and local alike."""
        prefix = prefix_uri.rstrip("/") + "/"
        ref = parse_uri(prefix)
        base = None if ref.scheme == "s3" else self._local_path(ref, prefix)
        out: dict[str, str] = {}
        for obj in self.list(prefix):
            if base is None:
                rel = obj.uri[len(prefix):]
            else:
                try:
                    rel = Path(obj.uri).resolve().relative_to(base).as_posix()
                except ValueError:  # a sibling folder that merely shares the name's start
                    continue
            if rel:
                out[rel] = obj.uri
        return out

    def upload_folder(self, folder: Path, uri: str) -> list[str]:
        """Copy every file under `folder` to `uri/<relative path>`; returns the object URIs."""
        folder = Path(folder)
        return [
            self.put(f"{uri.rstrip('/')}/{path.relative_to(folder).as_posix()}", path.read_bytes()).uri
            for path in sorted(p for p in folder.rglob("*") if p.is_file())
        ]

    def download_folder(self, uri: str, target: Path) -> Path:
        """Copy every object under `uri/` into `target` (the inverse of upload_folder), atomically:
        the files appear under `target` only once all of them are there."""
        objects = self.list_relative(uri)
        if not objects:
            raise ObjectNotFound(uri, "no objects under this prefix")
        import shutil
        import tempfile

        for rel in objects:
            _check_relative_key(uri, rel)
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # one per process
        try:
            for rel, obj_uri in objects.items():
                (part / rel).parent.mkdir(parents=True, exist_ok=True)
                (part / rel).write_bytes(self.get(obj_uri))
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            try:
                part.rename(target)
            except OSError:  # another process finished the same download first: use theirs
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(part, ignore_errors=True)
        return target

    def check_bucket(self, bucket: str) -> None:
        """Fails with a specific error when the bucket is missing, denied or unreachable."""
        uri = f"s3://{bucket}/"
        try:
            self.s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            raise self._s3_error(uri, exc) from exc

    @property
    def s3_configured(self) -> bool:
        """S3 is the backend (APA_STORAGE_BACKEND=s3); local paths are then not for tenants."""
        return self.backend == "s3"

    def service_uri(self, settings_bucket: str, key: str) -> str:
        """Where the service keeps its own objects: the bucket in the s3 backend, else the folder
        (outside every tenant's folder, so no tenant can name an adapter or a report)."""
        if self.s3_configured:
            return f"s3://{settings_bucket}/{key}"
        return str(self.root / key)


def replace_root(store: ObjectStore, root: Path) -> ObjectStore:
    """A shallow copy of `store` on another local root that shares its (thread-safe) S3 client."""
    import copy

    scoped = copy.copy(store)
    scoped.root = Path(root).resolve()
    if scoped._client is None and store.backend == "s3":
        scoped._client = store.s3  # create it once, shared by every tenant's view
    return scoped


def _check_relative_key(uri: str, rel: str) -> None:
    """A key below a prefix becomes a local path: refuse one that would leave the target folder
    (absolute, `..`, a drive or backslash form) instead of writing wherever it points."""
    parts = rel.replace("\\", "/").split("/")
    drive = os.name == "nt" and len(rel) > 1 and rel[1] == ":"
    if rel.startswith(("/", "\\")) or ".." in parts or "" in parts[:-1] or drive:
        raise AccessDenied(f"{uri.rstrip('/')}/{rel}", "unsafe object key: it would be written outside the target folder")
