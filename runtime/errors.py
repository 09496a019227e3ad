"""Every error Ripple reports, in one tree, each with its HTTP status.

    RippleError                     500  internal_error
    ├── ConfigError                 500  bad settings or missing model (a start-up failure)
    ├── BadRequestError             400  invalid_request_error
    │   └── UnsupportedFieldError   400  fields Ripple does not implement
    ├── NotFoundError               404  no such document or job
    ├── ModelNotFoundError          404  the `model` is not the one served
    ├── ConflictError               409  the request clashes with what is stored
    ├── PayloadTooLargeError        413  an upload over the limit
    ├── ClientClosedError           499  the client left before the answer (nothing is sent)
    ├── OverloadedError             429  admission refused (has Retry-After)
    ├── UpstreamError               502  the remote generator failed
    ├── DeadlineError               504  the request's deadline passed (x-should-retry: false)
    └── NotReadyError               503  engine, store or rails not ready, or draining (has Retry-After)
        └── EngineFailedError       503  the engine died under a request

A guardrail refusal is not here: it is a normal answer with `finish_reason: "content_filter"`.
The HTTP mapping lives in `runtime.api.handlers`; this module imports nothing of ours.
"""

from __future__ import annotations


class RippleError(Exception):
    status_code = 500
    error_type = "internal_error"
    retry_after: int | None = None
    should_retry: bool | None = None
    """Sent as `x-should-retry`, which OpenAI's clients obey; None leaves retrying to the client."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_openai(self) -> dict[str, object]:
        """The OpenAI error object: `{"error": {"message", "type", "param", "code"}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.status_code,
            }
        }


class ConfigError(RippleError):
    error_type = "configuration_error"


class BadRequestError(RippleError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedFieldError(BadRequestError):
    pass


class NotFoundError(RippleError):
    status_code = 404
    error_type = "not_found"


class ConflictError(RippleError):
    status_code = 409
    error_type = "conflict"


class PayloadTooLargeError(RippleError):
    status_code = 413
    error_type = "payload_too_large"


class ModelNotFoundError(RippleError):
    status_code = 404
    error_type = "model_not_found"


class OverloadedError(RippleError):
    status_code = 429
    error_type = "overloaded"
    retry_after = 1


class UpstreamError(RippleError):
    status_code = 502
    error_type = "upstream_error"


class DeadlineError(RippleError):
    status_code = 504
    error_type = "timeout"
    should_retry = False  # the same request would run out of time again


class NotReadyError(RippleError):
    status_code = 503
    error_type = "not_ready"
    retry_after = 5


class EngineFailedError(NotReadyError):
    error_type = "engine_failed"


class ClientClosedError(RippleError):
    status_code = 499
    error_type = "client_closed_request"
