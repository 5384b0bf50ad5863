"""The gateway client service: the app's side of CMaaS (SPEC section 1)."""

from cmaas.clientservice.api import ApiError, AppCredentials, GatewayApi

__all__ = ["ApiError", "AppCredentials", "GatewayApi"]
