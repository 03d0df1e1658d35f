"""Who acts on the registry, and whether they may: MLflow's own basic-auth permissions.

A team's MLflow server runs ``mlflow server --app-name basic-auth``: every request carries a user
(``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``, read by MLflow's
client from the environment; ganforge never reads, prints or logs them), and each registered model
grants each user READ, USE, EDIT or MANAGE. ganforge asks the server, through MLflow's
``AuthServiceClient``, for the acting user's permission on the model before it changes anything:

- ``register`` needs EDIT (a model that does not exist yet is created by the registering user, who
  MLflow makes its owner, with MANAGE);
- ``promote`` and ``rollback`` need MANAGE: moving ``@champion`` ships a model. The server itself lets
  EDIT move any alias; this is ganforge's rule on top of MLflow's permissions, so a team gives release
  managers MANAGE and everyone who only registers EDIT.

The registry lock's tickets are versions of ``NAME.ganforge-lock``; taking and releasing one needs MANAGE
there (releasing deletes a version), so ``grant`` of EDIT or MANAGE on NAME also grants MANAGE on its lock.

A server without basic-auth (a sqlite file, a plain ``mlflow server``) has no users: the acting user is
then the OS account, as recorded before, and nothing is refused here.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from ganforge.errors import GanforgeError
from ganforge.registry import store
from ganforge.tracking import identity, redact, tracking_uri

LEVELS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")  # MLflow's permissions, weakest first (DENY: none)
NEEDS = {"register": "EDIT", "promote": "MANAGE", "rollback": "MANAGE"}
GRANTABLE = ("READ", "USE", "EDIT", "MANAGE")


@dataclass(frozen=True)
class Access:
    """The acting user and what they may do with one registered model."""

    auth: bool  # the server checks users (basic-auth); False: anyone may do anything
    user: str  # the authenticated user, or the OS account when the server has no users
    is_admin: bool
    permission: str | None  # on the model (None without auth)
    model_exists: bool
    lock_permission: str | None = None  # on NAME.ganforge-lock (None: no auth, an admin, or no lock model yet)

    def may(self, action: str) -> bool:
        """Whether ``action`` (register, promote, rollback) is allowed, the registry lock included."""
        if not self.auth or self.is_admin:
            return True
        if not self.model_exists:
            return True  # register creates it (its user owns it); the others report it missing
        return level(self.permission) >= level(NEEDS[action]) and self.may_lock()

    def may_lock(self) -> bool:
        """Whether the user may take and release the model's registry lock (a missing lock model they create)."""
        return self.lock_permission is None or level(self.lock_permission) >= level("MANAGE")

    def record(self) -> dict:
        """What ``ganforge permissions show --json`` prints."""
        return {**asdict(self), "may_register": self.may("register"), "may_promote": self.may("promote")}


def level(permission: str | None) -> int:
    """Rank of an MLflow permission name (DENY and unknown names rank lowest)."""
    return LEVELS.index(permission) if permission in LEVELS else 0


def access(c, name: str) -> Access:
    """The acting user's ``Access`` to registered model ``name`` on the client's server."""
    uri = tracking_uri()
    auth, user, is_admin = identity(uri)
    exists = store.model_exists(c, name)
    if not auth:
        return Access(False, user, False, None, exists)
    permission = lock_permission = None
    if exists and not is_admin:
        lock = name + store.LOCK_SUFFIX
        with store.mlflow_errors(f"reading the permissions of user {user!r} on {name}"):
            auth_client = store.auth_client(uri)
            permission = auth_client.get_user_permission(user, "registered_model", name).permission
            if store.model_exists(c, lock):
                lock_permission = auth_client.get_user_permission(user, "registered_model", lock).permission
    return Access(True, user, is_admin, "MANAGE" if is_admin else permission, exists, lock_permission)


def require(c, name: str, action: str) -> Access:
    """The acting user's ``Access`` when they may ``action`` (register, promote, rollback) model ``name``.

    Raises:
        GanforgeError: ``error: user 'ci' may not promote ganforge-generator (needs MANAGE, has READ); ask its
            owner ...``; nothing has been written.
    """
    found = access(c, name)
    if found.may(action):
        return found
    need = NEEDS[action]
    if level(found.permission) >= level(need):  # only the lock is closed to them
        raise GanforgeError(store.lock_refused(found.user, name, need, found.lock_permission))
    raise GanforgeError(f"user {found.user!r} may not {action} {name} (needs {need}, has "
                        f"{found.permission or 'NO_PERMISSIONS'}); ask its owner: `ganforge permissions grant "
                        f"--user {found.user} --permission {need} --name {name}`")


def grant(c, name: str, user: str, permission: str) -> dict:
    """Give ``user`` ``permission`` on model ``name`` (and, for EDIT or MANAGE, MANAGE on its registry lock).

    The acting user needs MANAGE on ``name`` (MLflow checks that); the lock model is created if missing.

    Returns:
        ``{"user", "name", "permission", "lock"}``: ``lock`` is the lock model's grant or None.

    Raises:
        GanforgeError: no basic-auth on the server, an unknown permission, model or user, or no MANAGE.
    """
    if permission not in GRANTABLE:
        raise GanforgeError(f"--permission {permission!r} is not one of {', '.join(GRANTABLE)}")
    uri = tracking_uri()
    auth, me, _ = identity(uri)
    if not auth:
        raise GanforgeError(f"the MLflow server at {redact(uri)} has no users (not started with --app-name "
                            "basic-auth); there is nothing to grant")
    if not store.model_exists(c, name):
        raise GanforgeError(f"no registered model {name!r}; register a version first (its owner gets MANAGE)")
    auth_client = store.auth_client(uri)
    lock = name + store.LOCK_SUFFIX
    with _refused(me, f"grant permissions on {name}", name):
        auth_client.grant_user_permission(user, "registered_model", name, permission)
    lock_grant = None
    if level(permission) >= level("EDIT"):
        store.ensure_lock_model(c, lock)
        with _refused(me, f"grant permissions on {lock}", lock):
            auth_client.grant_user_permission(user, "registered_model", lock, "MANAGE")
        lock_grant = "MANAGE"
    return {"user": user, "name": name, "permission": permission, "lock": lock_grant}


@contextlib.contextmanager
def _refused(me: str, what: str, name: str):
    try:
        yield
    except Exception as exc:
        if not store.is_mlflow_error(exc):
            raise
        code = store.error_code(exc)
        if code == "PERMISSION_DENIED":
            raise GanforgeError(f"user {me!r} may not {what} (needs MANAGE on {name}); ask its owner or the "
                                "server's admin") from None
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise GanforgeError(f"cannot {what}: {store.one_line(exc)}; create the user first (the server's admin "
                                "does) or fix the name") from None
        raise GanforgeError(f"cannot {what}: {store.one_line(exc)}") from None


def denied(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing the acting user (HTTP 403)."""
    return store.is_mlflow_error(exc, ("PERMISSION_DENIED",))
