"""icefloe's REST API (FastAPI): :func:`create_app` builds it, :func:`serve` runs it under uvicorn
(``icefloe serve``). Routes hold no logic: they call the functions the CLI calls."""

from icefloe.api import pagination, schemas
from icefloe.api.app import create_app
from icefloe.api.server import serve
from icefloe.settings import ApiSettings

__all__ = ["ApiSettings", "create_app", "pagination", "schemas", "serve"]
