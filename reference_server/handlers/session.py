"""The dashboard's sign-in: trade the token (in a JSON body, never a URL) for a cookie that stands for it."""

from __future__ import annotations

from typing import Any

from .. import access
from ..errors import Forbidden, NoTokenConfigured, ValidationFailed
from ..schemas import Contract
from .base import BaseHandler


class SessionHandler(BaseHandler):
    """GET /api/session (is a token needed, is this browser signed in), POST (sign in), DELETE (sign out)."""

    public = True  # signing in must not need the credential it hands out

    def initialize(self, contract: Contract) -> None:
        """Dependencies from the route table."""
        self.contract = contract

    def _state(self, signed_in: bool) -> dict[str, Any]:
        return {
            "token_required": self.policy.api_token is not None,
            "reads_protected": self.policy.protect_reads,
            "signed_in": signed_in,
        }

    async def get(self) -> None:
        """Whether the server has a token and whether this request carries a valid sign-in cookie."""
        self.write_json(self._state(self.signed_in()))

    async def post(self) -> None:
        """Sign in: 200 and the cookie when the body's token is the server's; 403 for another; 409 without one."""
        body = self.json_body("session-create-request.schema.json", self.contract)
        token = self.policy.api_token
        if token is None:
            raise NoTokenConfigured(
                "this server runs without TRAINER_API_TOKEN: everything is open, nothing to sign in to"
            )
        if not body:
            raise ValidationFailed(
                'send {"token": "<TRAINER_API_TOKEN>"}', errors=[{"field": "token", "message": "required"}]
            )
        if not access.token_matches(str(body["token"]), token):
            raise Forbidden("that is not the token this server was started with")
        self.set_signed_cookie(
            access.SESSION_COOKIE,
            access.SESSION_VALUE,
            expires_days=None,
            max_age=access.SESSION_HOURS * 3600,
            httponly=True,
            samesite="Strict",
            secure=self.request.protocol == "https",
            path="/",
        )
        self.write_json(self._state(True))

    async def delete(self) -> None:
        """Sign out: the cookie is cleared (200 whether or not there was one)."""
        self.clear_cookie(access.SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
        self.write_json(self._state(False))
