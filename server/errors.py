"""Errors in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from fastapi.responses import JSONResponse

_TYPES = {400: "invalid_request_error", 401: "authentication_error",
          403: "permission_error", 404: "not_found_error", 409: "conflict_error",
          413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code,
                              self.headers)


def error_response(status: int, message: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def json_path(parts) -> str:
    """One syntax for `param`: fields joined by dots, list indexes in brackets
    (`control.steer[0].scale`)."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


_PYDANTIC_CODES = {"missing": "missing_field", "extra_forbidden": "unknown_field"}


def pydantic_errors_to_api_error(exc, prefix: str = "") -> APIError:
    """The first pydantic validation error as a 400 naming the offending field."""
    first = exc.errors()[0]
    loc = json_path([p for p in first.get("loc", ()) if p != "body"])
    param = (f"{prefix}{'' if loc.startswith('[') else '.'}{loc}" if prefix and loc
             else (prefix or loc or None))
    code = _PYDANTIC_CODES.get(first.get("type", ""), "invalid_value")
    return APIError(400, f"{param}: {first.get('msg', 'invalid value')}" if param
                    else first.get("msg", "invalid request"), param=param, code=code)
