"""BLAS on one thread while the contrast detector works.

The detector's matrix products are small (the k x k normal equations of the background fit over ~11,000
block means, a few-column matrix times a vector): OpenBLAS's own threads cost more to wake than they save,
several times more when another process holds a core, and the detector runs images on threads of its own
(``threads``). On one thread the sums are also the same on every machine: where a matrix-vector product has
fewer than four rows per thread, OpenBLAS splits its long sums between the threads and adds the parts, so the
last bits depended on the core count before (on this project's 2-core machines they are the same as before).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any, cast

from threadpoolctl import ThreadpoolController


@functools.cache
def _controller() -> ThreadpoolController:
    # The BLAS libraries loaded when first asked (NumPy's and SciPy's, imported by then).
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context manager: BLAS on one thread inside it, as many as before after it.

    The limit is process-wide: enter it where the detector's work starts (calibrate, detect), not around
    each product, so that it never changes while another of the detector's threads is inside BLAS. Entered
    from several threads at once, the count restored last wins: only speed depends on it."""
    return cast(AbstractContextManager[Any], _controller().limit(limits=1, user_api="blas"))
