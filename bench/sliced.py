"""``python -m bench.sliced COMMAND [ARG...]``: run COMMAND with the shortest time slice.

The bench runs ``wrk`` this way. Its paced scrapes measure a fraction of a millisecond, and on a
machine whose cores the cycle fills, wrk waking up late to read an answer counts in what it
measures as much as the server answering late. With the shortest slice (see
:mod:`exporter.timeslice`, which the exporter's serving process asks for too) it wakes at once;
the request happens before ``exec``, so all of wrk's threads have it.
"""

from __future__ import annotations

import os
import sys

from exporter import timeslice


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    timeslice.request(os.getpid())
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
