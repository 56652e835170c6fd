import contextlib
import os

import pytest

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

try:  # small BLAS calls crawl when a shared machine is oversubscribed; one thread is plenty here
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """NumPy/SciPy linear algebra on one thread (JAX does not use this pool)."""
    with threadpool_limits(1) if threadpool_limits else contextlib.nullcontext():
        yield
