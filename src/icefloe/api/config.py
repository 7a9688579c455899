"""Settings of the REST API, read from the environment by ``icefloe serve`` (or built by a test)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from icefloe.errors import ConfigurationError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(env: dict[str, str] | os._Environ[str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class ApiSettings:
    """What the API needs beyond :class:`icefloe.settings.Settings`.

    ``cors_origins``: origins allowed to call the API from a browser; empty (the default) adds no
    CORS headers at all. ``metrics_public``: ``/metrics`` answers without a token (for Prometheus
    scrapers on a trusted network); otherwise it needs a reader token like every other route.
    """

    cors_origins: tuple[str, ...] = ()
    metrics_public: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ApiSettings:
        """``ICEFLOE_API_CORS_ORIGINS`` (comma-separated), ``ICEFLOE_API_METRICS_PUBLIC`` (true/false)."""
        env = os.environ if environ is None else environ
        origins = tuple(o.strip() for o in env.get("ICEFLOE_API_CORS_ORIGINS", "").split(",") if o.strip())
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigurationError(f"ICEFLOE_API_CORS_ORIGINS: {origin!r} is not an http(s) origin")
        return cls(cors_origins=origins, metrics_public=_flag(env, "ICEFLOE_API_METRICS_PUBLIC"))
