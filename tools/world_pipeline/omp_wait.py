"""
How the OpenMP threads of the pipeline and of every stage it starts wait for work: briefly.

PyTorch's CPU kernels run on OpenMP threads, which by default spin for a while at the end
of each parallel region before they sleep. On an idle machine that saves a wake-up; on a
shared one the spinning threads take the cores that the other processes (and the stage's
own threads) need: measured on 2 cores beside other CPU work, a 2-thread stage ran 7.8x
slower than with 1 thread (issue 35). A short spin keeps the idle speed and gives the cores
back: on this project's box-head and convolution step (2 threads, bfloat16), beside one
busy process, the default spin gave 4.2 steps/s, ``OMP_WAIT_POLICY=PASSIVE`` 5.2 and a
spin count of 1000 5.3; idle, the three were within the run-to-run noise (9.1 to 10.8).

Imports nothing of torch: :func:`wait_briefly` must run before OpenMP starts in this process.
"""

import os
from typing import MutableMapping

__all__ = ["BRIEF_WAIT", "wait_briefly"]

# libgomp (PyTorch's Linux wheels): spin 1000 times, then sleep; Intel's OpenMP (conda's
# builds): sleep after 1 ms
BRIEF_WAIT = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}
# a user's own choice of any of these is kept as it is
USER_CHOICES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def wait_briefly(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set BRIEF_WAIT in ``environ`` (default: this process's), unless the user chose a policy."""
    if not any(name in environ for name in USER_CHOICES):
        environ.update(BRIEF_WAIT)
