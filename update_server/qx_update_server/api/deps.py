"""What routes share: the server's parts, reached through the app (``app.state.services``), not closures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from qx_update_server.repository import Repository
from qx_update_server.staging import Staging
from qx_update_server.storage import Storage


@dataclass(frozen=True)
class Services:
    repo: Repository
    storage: Storage
    staging: Staging
    max_upload: int  # bytes per artifact file (--max-upload)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


Svc = Annotated[Services, Depends(_services)]
