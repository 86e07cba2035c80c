"""Named fault-injection points for crash tests.

A test sets ``SHIPYARD_FAULT_POINT`` to a point name (for example
``register.after-blob-write``) and ``SHIPYARD_FAULT_MARKER`` to a file path; when the
process reaches that point it writes the point's name to the marker file (so the test can
assert the point was really reached) and kills itself with SIGKILL. With the variable unset,
:func:`reach` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_POINT_ENV = "SHIPYARD_FAULT_POINT"
FAULT_MARKER_ENV = "SHIPYARD_FAULT_MARKER"


def reach(point: str) -> None:
    """Die here with SIGKILL if the environment names this point."""
    if os.environ.get(FAULT_POINT_ENV) != point:
        return
    marker = os.environ.get(FAULT_MARKER_ENV)
    if marker:
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(point)
            fh.flush()
            os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
