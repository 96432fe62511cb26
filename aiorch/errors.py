"""Domain errors shared by the hub, the CLI and the lab.

Services raise these; the API maps them to HTTP status codes in one place
(aiorch.hub.app) and the CLI prints them as one line with a non-zero exit.
"""


class AiorchError(Exception):
    """Base class: the message is meant for a person and fits on one line."""

    status_code = 400


class InvalidInput(AiorchError):
    status_code = 422


class NotFound(AiorchError):
    status_code = 404


class Conflict(AiorchError):
    status_code = 409


class Unauthorized(AiorchError):
    status_code = 401


class Forbidden(AiorchError):
    status_code = 403


class Gone(AiorchError):
    """Something that existed but can no longer be used (expired or used-up token)."""

    status_code = 410


class Unavailable(AiorchError):
    """Temporarily unable to serve; clients retry after `retry_after` seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UserError(AiorchError):
    """A local problem the CLI reports (missing file, missing system package, not root)."""

    status_code = 400
