"""The HTTP API for apps, on aiohttp; ``docs/openapi.json`` describes it."""

from cmaas.api.addresses import ClientAddresses
from cmaas.api.routes import api_routes, error_middleware

__all__ = ["ClientAddresses", "api_routes", "error_middleware"]
