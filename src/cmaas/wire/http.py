"""Refusals as HTTP answers, one form for the gateway's API and the client daemon:
``{"error": CODE, "detail": TEXT}`` with the code's status, and ``Retry-After`` where
trying again later may succeed."""

from __future__ import annotations

import math

from aiohttp import web

__all__ = ["refusal_response", "router_refusal"]


def refusal_response(
    status: int, code: str, detail: str, retry_after: float | None = None
) -> web.Response:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


def router_refusal(request: web.Request, error: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (unknown path, wrong method, body too large) in the same
    form, their code made from the reason (``Method Not Allowed`` → ``method_not_allowed``).

    Raises: the error itself when it is not a refusal (a redirect).
    """
    if error.status < 400:
        raise error
    response = refusal_response(
        error.status,
        error.reason.lower().replace(" ", "_"),
        f"{request.method} {request.path}: {error.reason}",
    )
    if "Allow" in error.headers:
        response.headers["Allow"] = error.headers["Allow"]
    return response
