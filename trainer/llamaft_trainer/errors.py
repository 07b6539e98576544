"""Errors a user can meet, and the exit codes the operator's Job podFailurePolicy acts on.

0 success · 2 bad input (FailJob: retrying cannot help) · 3 publish rejected by the Hub (auth or
permission; FailJob) · 75 preempted after saving a checkpoint (retried, resumes) · anything else is
retried against the Job's backoffLimit and resumes from the newest complete checkpoint.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_PUBLISH_REJECTED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: retried by the Job, resumes from the checkpoint just saved


class LlamaftError(Exception):
    """Base class: `message` says what is wrong and what to do."""

    exit_code = 1


class BadInputError(LlamaftError):
    """The manifest, plan or data is unusable; retrying cannot help."""

    exit_code = EXIT_BAD_INPUT


class PublishRejectedError(LlamaftError):
    """The Hub refused our credentials or permissions; retrying cannot help."""

    exit_code = EXIT_PUBLISH_REJECTED


class GateFailedError(LlamaftError):
    """An evaluation gate was not met; the adapter stays on the volume, nothing is published."""

    exit_code = EXIT_BAD_INPUT
