"""MLflow as a team runs it, as throw-away processes on 127.0.0.1: PostgreSQL, and an ``mlflow server`` on
it with basic-auth and its artifacts in an S3 bucket (moto), served through the server.

Used by the test fixtures (``tests/integration/conftest.py``) and ``benchmarks/registry_stress.py``:

- ``Postgres.start(root)``: ``initdb`` + ``pg_ctl`` from Debian's server package (``/usr/lib/postgresql/*/bin``)
  on a free port, TCP on 127.0.0.1 only (no unix socket), trust authentication (local test use only). initdb
  refuses to run as root, so as root the cluster runs as the ``postgres`` system user in a folder it owns.
- ``TeamServer.start(...)``: the tracking store and the auth store are two databases of that cluster;
  ``--app-name basic-auth`` with ``default_permission = READ``; the admin is created from
  ``MLFLOW_AUTH_ADMIN_PASSWORD`` and creates the test's users.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = "admin"
ADMIN_PASSWORD = "admin-test-password-Zq7"  # a test server's, thrown away with it


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    """A running throw-away PostgreSQL cluster."""

    root: Path
    port: int
    user: str  # the database superuser (the OS user running the cluster)
    bin: Path
    as_postgres: bool

    @classmethod
    def start(cls) -> Postgres:
        pg = postgres_bin()
        if pg is None:
            raise RuntimeError("PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb); "
                               "apt-get install postgresql")
        as_postgres = os.geteuid() == 0
        # not under pytest's tmp folder: as root that is mode 0700, closed to the postgres user
        root = Path(tempfile.mkdtemp(prefix="ganforge-pg-"))
        user = "postgres" if as_postgres else pwd.getpwuid(os.geteuid()).pw_name
        if as_postgres:
            shutil.chown(root, "postgres", "postgres")
        from tests.conftest import free_port

        self = cls(root, free_port(), user, pg, as_postgres)
        self._run([str(pg / "initdb"), "-D", str(root / "data"), "-U", user, "-A", "trust", "-E", "UTF8",
                   "--no-sync", "--no-instructions"])
        # fsync off: a test database is thrown away, and a busy CI disk makes every commit slow otherwise
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([str(pg / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-o", opts,
                   "-w", "-t", "120", "start"])
        return self

    def _run(self, cmd: list[str]) -> None:
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=self.root)
        if res.returncode:
            log = self.root / "server.log"
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}"
                               + (log.read_text()[-2000:] if log.exists() else ""))

    def create_database(self, name: str) -> str:
        """A new database; returns its SQLAlchemy URI."""
        self._run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name])
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class TeamServer:
    """An ``mlflow server`` on PostgreSQL with basic-auth and S3 artifacts; ``users`` maps name -> password."""

    proc: subprocess.Popen
    url: str
    root: Path
    artifacts: str  # s3://<bucket>/mlflow-artifacts
    endpoint: str  # the S3 endpoint of the artifacts
    s3_env: dict[str, str]  # the S3 keys the server (and a test reading the bucket) uses
    users: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, root: Path, pg: Postgres, s3_endpoint: str, s3_env: dict[str, str]) -> TeamServer:
        """Create a bucket at ``s3_endpoint`` (keys in ``s3_env``) and two databases on ``pg``, start the server
        (2 workers) with its log in ``root``, and wait for /health."""
        import uuid

        import boto3

        from tests.conftest import free_port, wait_http

        tag = f"t{uuid.uuid4().hex[:12]}"
        bucket = f"team-{tag}"
        boto3.client("s3", endpoint_url=s3_endpoint, region_name=s3_env.get("AWS_REGION", "us-east-1"),
                     aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
        store = pg.create_database(f"{tag}_store")
        auth = pg.create_database(f"{tag}_auth")
        root.mkdir(parents=True, exist_ok=True)
        ini = root / "basic_auth.ini"
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = {auth}\nadmin_username = {ADMIN}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                       # each request otherwise re-derives the password hash (PBKDF2): a third of a busy
                       # server's CPU in the registry tests, which poll the lock
                       "auth_cache_ttl_seconds = 60\n")
        port = free_port()
        artifacts = f"s3://{bucket}/mlflow-artifacts"
        env = {**os.environ, **s3_env, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "MLFLOW_AUTH_CONFIG_PATH": str(ini),
               "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_FLASK_SERVER_SECRET_KEY": f"csrf-{tag}"}  # the same in every worker
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            env.pop(key, None)
        log = open(root / "server.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", store,
             "--artifacts-destination", artifacts, "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)  # fmt: skip
        log.close()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/health", proc, timeout=180)
        except RuntimeError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"team mlflow server did not start; log:\n{(root / 'server.log').read_text()[-4000:]}") from None
        return cls(proc, url, root, artifacts, s3_endpoint, dict(s3_env), {ADMIN: ADMIN_PASSWORD})

    def add_user(self, name: str, password: str) -> None:
        """Create a user (as the admin, through MLflow's own auth client)."""
        from mlflow.server.auth.client import AuthServiceClient

        with credentials(ADMIN, ADMIN_PASSWORD):
            AuthServiceClient(self.url).create_user(name, password)
        self.users[name] = password

    def grant(self, user: str, model: str, permission: str) -> None:
        from mlflow.server.auth.client import AuthServiceClient

        with credentials(ADMIN, ADMIN_PASSWORD):
            AuthServiceClient(self.url).grant_user_permission(user, "registered_model", model, permission)

    def env(self, user: str) -> dict[str, str]:
        """The environment a client of this server runs with as ``user``."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": self.users[user]}

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@contextlib.contextmanager
def credentials(user: str, password: str):
    """MLflow's client credentials for the block (it reads them from the environment per request)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, (user, password))))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
