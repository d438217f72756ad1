"""Run the ``sdhw`` command line in-process, for the tests of every folder that reach it."""
from __future__ import annotations

import contextlib
import io

from cli.main import main


def run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process -> (exit code, stdout, stderr); argparse exits become exit codes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()
