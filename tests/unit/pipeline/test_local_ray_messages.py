"""What a local Ray start is allowed to print: Ray's token-auth notice is dropped, nothing else."""

from __future__ import annotations

import logging

from pipeline import local_ray


def _record(message: str) -> logging.LogRecord:
    name = local_ray._AUTH_LOGGER.name
    return logging.LogRecord(name, logging.WARNING, "x", 1, message, (), None)


def test_only_the_token_auth_enabled_notice_is_dropped() -> None:
    notice = "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled"
    assert not local_ray._drop_token_auth_enabled_notice(_record(notice))
    for kept in (
        "Token authentication is disabled for this Ray cluster. Anyone with network access ...",
        "Token authentication is enabled but no authentication token was found",
    ):
        assert local_ray._drop_token_auth_enabled_notice(_record(kept))
