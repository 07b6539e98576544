"""`llamaft-torchrun`: torchrun that keeps the trainer's exit codes.

torchrun exits 1 whatever its workers exited with. That would hide the contract the Jobs'
`podFailurePolicy` reads (2 bad input and 3 publish rejected fail the Job at once, 75 preempted
is retried from the checkpoint), so a multi-GPU pod would burn its retries on a malformed dataset.
This runs torchrun's own launcher in-process, with torchrun's arguments unchanged, and exits with
the code of the worker that failed first when it is one of those.
"""

from __future__ import annotations

import sys

from llamaft_trainer.errors import EXIT_BAD_INPUT, EXIT_PREEMPTED, EXIT_PUBLISH_REJECTED

CONTRACT_EXIT_CODES = frozenset({EXIT_BAD_INPUT, EXIT_PUBLISH_REJECTED, EXIT_PREEMPTED})


def exit_code(first_failure_code: int) -> int:
    """The pod's exit code for the first failed worker's code (1 for anything else)."""
    return first_failure_code if first_failure_code in CONTRACT_EXIT_CODES else 1


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))  # type: ignore[no-untyped-call]
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        print(err.format_msg(), file=sys.stderr)  # type: ignore[no-untyped-call]
        code = failure.exitcode
        print(f"llamaft-torchrun: rank {rank} failed first (exit {code})", file=sys.stderr)
        sys.exit(exit_code(code))


if __name__ == "__main__":
    main()
