"""Object storage through the minio SDK (MinIO in docker compose, SeaweedFS's S3 here).

One bucket (`KARYO_BUCKET`); the key layout and what is stored per case: infra.case_objects.

Every object carries its content type and its SHA-256 in the metadata (`x-amz-meta-sha256`);
writes of the same key with the same bytes are idempotent, so a re-run task rewrites the same
objects rather than adding new ones.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import urllib3
from minio import Minio
from minio.error import S3Error

from infra.settings import Settings


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int


class ObjectStore:
    def __init__(self, settings: Settings, http_client: urllib3.PoolManager | None = None) -> None:
        """`http_client`: the minio SDK's own (retries, long timeouts) unless given, e.g. a
        probe's with short timeouts and no retries."""
        self.bucket = settings.bucket
        self.client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http_client,
        )

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as error:  # another process made it first
                if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        digest = hashlib.sha256(data).hexdigest()
        self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata={"sha256": digest}
        )
        return StoredObject(key, digest, len(data))

    def get(self, key: str) -> bytes:
        response = self.client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
            return True
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        return [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self.client.remove_object(self.bucket, key)
