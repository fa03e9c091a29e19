"""One-line errors for bad input: every script exits with status 2 and no traceback."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (data, checkpoint or CLI value). The message names the file and the fault."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's ``main``; turn :class:`UserError` into ``error: ...`` on stderr and exit status 2.

    Ctrl-C exits with status 130 and a short message instead of a traceback; the training loops
    catch it themselves first to say how to resume. A closed output pipe exits with 141 (128 + SIGPIPE), silently.
    """
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`study.py --list | head`): stop quietly, as Unix tools do, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as e:
        if e.filename is None:
            raise
        # A file the system refused (no space, a read-only mount, permissions, a name too long) is the user's to
        # fix, not a bug: one line naming it. Errors without a file name are not the user's: they keep a traceback.
        print(f"error: {ascii(str(e.filename))[1:-1]}: {e.strerror or e}", file=sys.stderr)
        sys.exit(2)
