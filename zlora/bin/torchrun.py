"""torchrun without the launcher's traceback: a failed rank's own one-line error is the last word.

    python -m zlora.bin.torchrun --nproc_per_node 4 -m zlora.bin.train --config conf/x.yaml

Takes exactly torchrun's options (torch.distributed.run). Why a wrapper: when a rank exits
non-zero (zlora.bin.train prints ``train: error: ...`` and exits 2 for a bad input), torchrun's
elastic agent raises ChildFailedError, and torchrun's ``main`` lets it escape, so Python prints
~30 lines of the agent's traceback and failure table after the rank's message, and torchrun exits
1 whatever the rank's code was. Nothing inside the rank can prevent that short of exiting 0,
which would hide the failure. This wrapper runs the same launcher (``torch.distributed.run.run``),
catches ChildFailedError, says in one line which rank failed, and exits with that rank's code
(128 + N for a rank killed by signal N, as a shell reports it).
"""
from __future__ import annotations

import sys

from zlora.utils.cli import run_main

PROG = "zlora.bin.torchrun"


def parse_args(argv: list[str]):
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    parser.prog = f"python -m {PROG}"
    parser.description = __doc__.split("\n\n")[0]
    for action in parser._actions:          # torch leaves this one unexplained
        if action.dest == "training_script_args" and action.help is None:
            action.help = "arguments of the training script or module"
    return parser.parse_args(argv)


def exit_code(exitcode: int) -> int:
    """A rank's exit code as a shell would report it: negative (killed by signal N) -> 128 + N."""
    if exitcode < 0:
        return 128 + (-exitcode)
    return exitcode if 0 < exitcode < 256 else 1


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import run

    args = parse_args(argv)
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        print(f"{PROG}: {e.name}: rank {rank} {how} (its own error, if it printed one, is above)",
              file=sys.stderr)
        return exit_code(failure.exitcode)
    return 0


if __name__ == "__main__":
    run_main(main)
