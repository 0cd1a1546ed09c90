"""How both commands end on an error: one line on stderr and a non-zero exit, the traceback only with --debug.

    return exit_code(lambda: run(args), prog="run_analysis.py", debug="--debug" in argv,
                     interrupted="interrupted; the stages that finished are kept")
"""
from __future__ import annotations

import sys
from typing import Callable

from training.loop import TrainingInterrupted


def exit_code(call: Callable[[], int], *, prog: str, debug: bool, interrupted: str) -> int:
    """``call()``'s exit code. A ValueError, RuntimeError or OSError prints ``prog: error: ...`` and
    gives 1; TrainingInterrupted (its checkpoint is saved) prints its message and gives 128 + the
    signal; any other interruption prints ``interrupted`` and gives 130. With ``debug`` the errors and
    the other interruptions are raised instead."""
    try:
        return call()
    except (ValueError, RuntimeError, OSError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc} (--debug shows the traceback)", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(f"{prog}: {exc}; run the same command again to continue", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
