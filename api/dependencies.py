"""`Annotated` dependencies of the route: the tenant from the token, and the app's services."""

from __future__ import annotations

from collections.abc import Hashable, MutableMapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from api.auth import TokenVerifier
from api.metrics import ApiMetrics
from api.notifier import ChangeNotifier
from api.presign import Presigner
from api.reader import JobReader

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
    bodies: MutableMapping[Hashable, bytes]  # rendered bodies (`api.render.body_cache`)
    metrics: ApiMetrics


# Both async: a plain `def` dependency costs FastAPI a thread-pool hop per request.
async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def tenant(request: Request, _scheme: Annotated[object, Security(bearer_scheme)]) -> str:
    found: Services = request.app.state.services
    return found.verifier.tenant_of(request.headers.get("authorization"))


TenantDep = Annotated[str, Depends(tenant)]
