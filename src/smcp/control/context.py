"""What route handlers need, carried on the app so it works however the app is mounted."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from fastapi import Request

from smcp.config import Settings
from smcp.runtime.interface import Runtime
from smcp.secrets import SecretVault
from smcp.store import Store


@dataclass
class Context:
    settings: Settings
    store: Store
    runtime: Runtime
    # One deploy at a time per server, so a slow older build cannot go live after a newer one.
    deploy_locks: defaultdict[tuple[str, str], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # Tenant secrets (smcp.secrets); create_control_app opens one when none is given.
    vault: SecretVault | None = None


def get_context(request: Request) -> Context:
    return request.app.state.smcp
