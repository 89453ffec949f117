"""Typed errors. Library code raises these; only the CLI turns them into text and an exit code.

Exit codes follow docker's convention so that the container's own exit code (passed through by
`devbox run`) can be told apart from devbox's failures:
  125  devbox itself failed (bad input, missing image, kernel refused...)
  126  the container's command exists but cannot be executed
  127  the container's command was not found
Click's usage errors exit 2.
"""

from __future__ import annotations


class DevboxError(Exception):
    """An error a user can act on: one line naming the cause, and a hint naming the fix."""

    exit_code = 125

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class NotRootError(DevboxError):
    pass


class ConfigError(DevboxError):
    """A bad Devboxfile or bad command-line value."""


class NotFound(DevboxError):
    pass


class ImageNotFound(NotFound):
    pass


class ContainerNotFound(NotFound):
    pass


class NetworkNotFound(NotFound):
    pass


class AlreadyExists(DevboxError):
    pass


class IncorrectStatus(DevboxError):
    pass


class ImageError(DevboxError):
    """Corrupt, hostile or unsupported image content (digest mismatch, unsafe tar entry...)."""


class RegistryError(DevboxError):
    pass


class NetworkError(DevboxError):
    pass


class CgroupError(DevboxError):
    pass


class KernelError(DevboxError):
    """The kernel refused an operation (mount, unshare, pivot_root...)."""


class CommandNotFound(DevboxError):
    exit_code = 127


class CommandNotExecutable(DevboxError):
    exit_code = 126


class ServiceError(DevboxError):
    pass


class BuildError(DevboxError):
    pass
