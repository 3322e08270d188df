"""`Annotated` dependencies of the route: the tenant from the token, and the app's services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from api.auth import TokenVerifier
from api.metrics import ApiMetrics, remember_tenant
from api.notifier import ChangeNotifier
from api.presign import Presigner
from api.reader import JobReader
from api.render import BodyCache
from api.waiters import WaiterLimits
from contracts.storage import StorageRules

# Declares the security scheme in OpenAPI; the header itself is checked by TokenVerifier,
# because HTTPBearer's own 401/403 bodies are not the contract's.
bearer_scheme = HTTPBearer(auto_error=False, description="A JWT naming the tenant.")


@dataclass(frozen=True, slots=True)
class Services:
    reader: JobReader
    verifier: TokenVerifier
    presigner: Presigner
    notifier: ChangeNotifier
    presign_ttl_seconds: int
    presign_bucket_seconds: int
    bodies: BodyCache
    metrics: ApiMetrics
    storage: StorageRules  # what may be signed (CONTRACT §3)
    waiters: WaiterLimits


# Both async: a plain `def` dependency costs FastAPI a thread-pool hop per request.
async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def tenant(request: Request, _scheme: Annotated[object, Security(bearer_scheme)]) -> str:
    found: Services = request.app.state.services
    tenant_id = await found.verifier.tenant_of(request.headers.get("authorization"))
    remember_tenant(request.scope, tenant_id)
    return tenant_id


TenantDep = Annotated[str, Depends(tenant)]
