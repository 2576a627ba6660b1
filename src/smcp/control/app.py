"""The management API as one FastAPI app, meant to be mounted at /api/v1.

Routes are declared relative ("/tenants"); FastAPI derives the docs page's link to
the OpenAPI document and the document's `servers` entry from the mount's root_path,
so /api/v1/docs and /api/v1/openapi.json work wherever the lead mounts it.
"""

from __future__ import annotations

from fastapi import FastAPI

import smcp
from smcp.auth.keyseal import SealedSigningKeys
from smcp.config import Settings
from smcp.control.context import Context
from smcp.control.errors import install_error_handlers
from smcp.control.routes import identity, secrets, servers, system, tenants
from smcp.runtime.interface import Runtime
from smcp.secrets import SecretVault, open_vault
from smcp.store import Store


def create_control_app(
    settings: Settings, store: Store, runtime: Runtime, vault: SecretVault | None = None
) -> FastAPI:
    app = FastAPI(
        title="SMCP management API",
        version=smcp.__version__,
        description="Tenants, API keys, deployments and servers of an SMCP node.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    # The default vault knows the signing keys too: a rotation must re-wrap them before
    # it may retire the KEK they are sealed with.
    vault = vault or open_vault(settings, store.secrets, also=[SealedSigningKeys(store.oauth)])
    app.state.smcp = Context(settings=settings, store=store, runtime=runtime, vault=vault)
    routers = (system.router, tenants.router, servers.router, secrets.router, identity.router)
    for router in routers:
        app.include_router(router)
    install_error_handlers(app, [*app.routes, *(route for router in routers for route in router.routes)])
    return app
