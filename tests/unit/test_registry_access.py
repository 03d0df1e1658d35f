"""Who may register and promote (``ganforge.registry.access``), without a server: the decision table and the
stores that have no users. The same rules against a real basic-auth server: tests/integration/test_registry_team.py."""

from __future__ import annotations

import getpass

import pytest

from ganforge.registry.access import GRANTABLE, LEVELS, Access, level
from ganforge.tracking import identity


@pytest.mark.parametrize("permission, register, promote", [
    (None, False, False), ("NO_PERMISSIONS", False, False), ("DENY", False, False), ("READ", False, False),
    ("USE", False, False), ("EDIT", True, False), ("MANAGE", True, True),
])  # fmt: skip
def test_register_needs_edit_and_promote_manage(permission, register, promote):
    a = Access(auth=True, user="u", is_admin=False, permission=permission, model_exists=True)
    assert (a.may("register"), a.may("promote"), a.may("rollback")) == (register, promote, promote)
    assert a.record()["may_register"] == register and a.record()["may_promote"] == promote


@pytest.mark.parametrize("lock, allowed", [(None, True), ("MANAGE", True), ("EDIT", False), ("READ", False)])
def test_the_registry_lock_needs_manage_on_its_model(lock, allowed):
    a = Access(True, "u", False, "MANAGE", True, lock_permission=lock)
    assert (a.may("register"), a.may("promote"), a.may_lock()) == (allowed, allowed, allowed)


def test_admins_and_servers_without_users_may_everything_and_a_new_model_is_its_registrants():
    assert Access(True, "root", True, "READ", True).may("promote")
    assert Access(False, "me", False, None, True).may("promote")
    assert Access(True, "u", False, None, False).may("register")  # MLflow makes the creator its owner


def test_levels_are_ordered_as_mlflow_grants_them():
    assert [level(p) for p in LEVELS] == sorted(level(p) for p in LEVELS)
    assert level("MANAGE") > level("EDIT") > level("USE") > level("READ") > level("NO_PERMISSIONS") == level("DENY")
    assert set(GRANTABLE) < set(LEVELS)


@pytest.mark.parametrize("uri", ["sqlite:////tmp/x.db", "file:///tmp/mlruns", "databricks"])
def test_a_store_without_users_is_the_os_account(uri):
    assert identity(uri) == (False, getpass.getuser(), False)
