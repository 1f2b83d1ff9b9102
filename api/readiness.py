"""Can the service work right now? One check per dependency (database, Redis, object storage),
each with a short timeout, so a readiness probe answers in seconds even when a dependency hangs.

Used by `GET /health/ready` (load balancers, compose/Kubernetes readiness), which answers only
"ok"/"unavailable" per dependency (it needs no key, so no host names, users or driver messages
leave the server: the reasons go to the API's log), and by `karyo stack status`, which runs the
checks itself and prints the reasons. Liveness (`GET /health`) stays independent of the
dependencies: restarting the API does not bring Redis back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from infra.settings import Settings

OK = "ok"


def describe_error(error: BaseException) -> str:
    """`Type: first line` of an error: drivers append SQL, parameters and links on further lines."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def check_database(settings: Settings, timeout: float) -> None:
    """Reachable, and migrated to the schema this code expects (Alembic's head)."""
    from sqlalchemy import create_engine, inspect, make_url, text
    from sqlalchemy.pool import NullPool

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not Path(url.database).is_file():
            raise FileNotFoundError(f"no database file {url.database}")  # connecting would create it
        connect_args: dict = {}
    else:
        # bounded connect and statement time: the probe must answer even when the server hangs
        # or a migration holds a lock
        seconds = max(round(timeout), 1)
        connect_args = {"connect_timeout": seconds, "options": f"-c statement_timeout={seconds * 1000}"}
    engine = create_engine(url, connect_args=connect_args, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            revision = None
            if inspect(connection).has_table("alembic_version"):
                revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    if revision is None:
        raise LookupError("no Alembic revision: run the migrations (python -m db upgrade)")
    head = _alembic_head()
    if revision != head:
        raise LookupError(f"schema at revision {revision}, this code needs {head}: run python -m db upgrade")


def check_redis(settings: Settings, timeout: float) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    finally:
        client.close()


def check_object_storage(settings: Settings, timeout: float) -> None:
    import urllib3

    from infra.storage import ObjectStore

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=urllib3.Retry(total=0))
    store = ObjectStore(settings, http_client=http)
    # reachable with these credentials; a missing bucket is no fault (the API and the workers
    # create it at first use, compose's create-bucket job before)
    store.client.bucket_exists(store.bucket)


CHECKS: dict[str, Callable[[Settings, float], None]] = {
    "database": check_database,
    "redis": check_redis,
    "object_storage": check_object_storage,
}


def check_dependencies(settings: Settings, timeout: float = 2.0) -> dict[str, str]:
    """ "ok" or the reason, per dependency."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check(settings, timeout)
            results[name] = OK
        except Exception as error:  # any failure is the answer, not a crash of the probe
            results[name] = describe_error(error)
    return results
