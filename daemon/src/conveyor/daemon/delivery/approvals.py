"""Approving and rejecting a deployment on behalf of a caller: the one
place that checks the caller may (``approve`` in the deployment's
environment). The API's Approve/Reject and the dashboard's buttons both
come through here."""

from __future__ import annotations

from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.auth.permissions import Permission
from conveyor.daemon.delivery.records import DeploymentRecord
from conveyor.daemon.delivery.service import DeliveryService
from conveyor.daemon.errors import PermissionDenied


def check_approver(principal: Principal, environment: str) -> None:
    """Raise PermissionDenied unless ``principal`` may approve or reject
    deployments to ``environment``."""
    if not principal.may(Permission.APPROVE, environment):
        raise PermissionDenied(
            f"{principal.describe()} may not approve or reject deployments to"
            f" {environment} (needs the approver:{environment} role)"
        )


async def decide(
    delivery: DeliveryService,
    principal: Principal,
    deployment_id: str,
    comment: str,
    *,
    approve: bool,
) -> DeploymentRecord:
    """Approve (or reject) the deployment pending approval ``deployment_id``
    as ``principal``, recorded as its identity. Raises PermissionDenied
    (see :func:`check_approver`) and the errors of
    :meth:`DeliveryService.approve` / :meth:`DeliveryService.reject`."""
    record = await delivery.get(deployment_id)
    check_approver(principal, record.environment)
    if approve:
        return await delivery.approve(deployment_id, comment, approver=principal.identity)
    return await delivery.reject(deployment_id, comment, approver=principal.identity)
