"""Every notebook in notebooks/ runs to the end at toy size (WIDEBAYES_TOY=1) in a real kernel.

The notebooks are executed with nbclient in one ``python3`` kernel (ipykernel's own kernel spec,
the Python running the tests), started once for the module: starting a kernel and warming JAX up
costs more than running a toy notebook, and every notebook defines all it uses.
"""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_manager = pytest.importorskip("jupyter_client.manager")

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
FAMILIES = {"coding_schemes_depth1", "deep_layerwise_codes", "mnist_generalization",
            "lazy_kernel_renormalization", "geometry_across_layers", "representational_drift",
            "kernel_adaptation_criticality", "two_phases_ntk"}


def test_there_is_a_notebook_per_figure_family():
    assert FAMILIES <= {nb.stem for nb in NOTEBOOKS}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_cache")


@pytest.fixture(scope="module")
def kernel(cache):
    """One python3 kernel for all notebooks, with the toy switch and the cache folder set."""
    env = {**os.environ, "WIDEBAYES_TOY": "1", "WIDEBAYES_CACHE": str(cache), "MPLBACKEND": "Agg",
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    km = jupyter_manager.KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(NOTEBOOK_DIR))
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_at_toy_size(path, kernel, cache):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, km=kernel, timeout=300, kernel_name="python3")
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was drawn"
    assert list(cache.glob("*/posterior.nc")), "no run was sampled into the cache"
