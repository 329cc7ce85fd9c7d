"""Who may do what. Pure functions over a key and the object it names; each raises the designed status.

Design (docs/gateway.md): a key from another org gets 404 for an org's deployment, exactly as for one that
does not exist, so existence never leaks across orgs; a key of the same org (or a member) that lacks the
permission gets 403.
"""

from __future__ import annotations

from agentcloud.catalog import Catalog
from agentcloud.gateway.errors import GatewayError, forbidden, not_found
from agentcloud.gateway.routing import Deployment
from agentcloud.store.keys import KeyRecord


def _missing(dep_id: str) -> GatewayError:
    return not_found(f"deployment {dep_id} not found", code="deployment_not_found")


def invoke_deployment(key: KeyRecord, dep: Deployment | None, dep_id: str) -> Deployment:
    if dep is None:
        raise _missing(dep_id)
    if dep.id in key.grants:
        return dep
    perms = key.org_permissions(dep.org_id)
    if "deployment:invoke" in perms:
        return dep
    if key.org_id == dep.org_id or perms:
        raise forbidden(f"this key may not invoke deployment {dep.id}; ask an org admin for a grant")
    raise _missing(dep_id)


def invoke_org_deployment(key: KeyRecord, org_id: str, dep: Deployment | None, dep_id: str) -> Deployment:
    perms = key.org_permissions(org_id)
    member = bool(perms) or key.org_id == org_id
    if not member or dep is None or dep.org_id != org_id:
        raise _missing(dep_id)
    if "deployment:invoke" in perms or dep.id in key.grants:
        return dep
    raise forbidden(f"this key lacks deployment:invoke on {dep.id} in org {org_id}")


def manages_any(key: KeyRecord) -> bool:
    """Whether the key may manage deployments of some org (its own as an admin, or one it is a member of)."""
    return "deployment:manage" in key.org_permissions(key.org_id) or any(
        "deployment:manage" in perms for _, perms in key.memberships
    )


def manage_deployment(key: KeyRecord, dep: Deployment | None, dep_id: str) -> Deployment:
    if dep is None:
        raise _missing(dep_id)
    perms = key.org_permissions(dep.org_id)
    if "deployment:manage" in perms:
        return dep
    if key.org_id == dep.org_id or perms or dep.id in key.grants:
        raise forbidden(f"managing deployment {dep.id} needs an admin key of its org")
    raise _missing(dep_id)


def read_deployment(key: KeyRecord, dep: Deployment | None, dep_id: str) -> Deployment:
    if dep is None:
        raise _missing(dep_id)
    if key.org_permissions(dep.org_id) or dep.id in key.grants:
        return dep
    if key.org_id == dep.org_id:
        raise forbidden(f"this key may not read deployment {dep.id}")
    raise _missing(dep_id)


def invoke_model(key: KeyRecord, catalog: Catalog, model_id: str) -> None:
    if key.kind == "scoped":
        raise forbidden("scoped keys may call only the deployments they were granted")
    model = catalog.models.get(model_id)
    if model is None:
        return  # a route-file model outside the catalog: no plan tier applies
    plan = catalog.plans.get(key.plan)
    if plan is None or catalog.plans[model.tier].rank > plan.rank:
        raise forbidden(f"model {model_id} needs the {model.tier} plan or above; this key is on {key.plan}")
