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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module.  The whole suite in one process
    segfaulted twice at about 95% (in libgcc_s, unwinding), once the suite had grown by this stop's
    tests; every module passes alone.  Suspected: the executables' memory mappings accumulating
    towards the kernel's per-process limit; a module's compile-once checks are unaffected."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


@pytest.fixture
def sample_and_compare(tmp_path):
    """``widebayes sample`` then ``widebayes compare`` on an experiment dict, as a user runs them:
    ``sample_and_compare(cfg, name="run") -> report.json`` (the run in ``tmp_path / name``)."""
    import json

    from widebayes.cli import main
    from widebayes.config import to_toml

    def run(cfg: dict, name: str = "run") -> dict:
        config = tmp_path / f"{name}.toml"
        config.write_text(to_toml(cfg))
        out = tmp_path / name
        assert main(["sample", str(config), "--out", str(out), "--no-progress"]) == 0
        assert main(["compare", str(out)]) == 0
        return json.loads((out / "report" / "report.json").read_text())

    return run


@pytest.fixture
def killed_after_saves(monkeypatch):
    """``killed_after_saves(run, saves)``: call ``run()`` with the process "killed" (KeyboardInterrupt)
    right after the checkpoint's ``saves``-th completed save; ``checkpoint.save`` is restored after."""
    from widebayes import checkpoint

    def kill(run, saves: int) -> None:
        real_save, calls = checkpoint.save, []

        def save_then_die(*args, **kwargs):
            real_save(*args, **kwargs)
            calls.append(1)
            if len(calls) == saves:
                raise KeyboardInterrupt

        monkeypatch.setattr(checkpoint, "save", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                run()
        finally:
            monkeypatch.setattr(checkpoint, "save", real_save)

    return kill
