"""Mean-field theory of non-lazy (1/N readout) networks: analog, redundant and sparse coding schemes.

van Meegen & Sompolinsky, "Coding schemes in neural networks learning classification tasks"
(papers/coding-schemes-nonlazy-networks.txt); THEORY.md section 1.  Modules, one concept each:

- ``linear``: deep linear networks, exact at any T0 (readout covariance U, layer kernels,
  test predictor and its O(1/N) variance), and the direct rate-function minimiser that checks them;
- ``meanfield``: the single-neuron tilted measure of one hidden layer, any activation, small P;
- ``cramer``: cumulant functions / Cramér rates of phi(z), the tilted class laws;
- ``classes``: the class-structured reduction ``F(s)``, its maxima (codes), finite-P weights;
- ``sigmoid``: redundant codes (equilibrium, finite P, alternative schemes);
- ``relu``: sparse codes (bulk, outlier masses, critical temperatures);
- ``classpredict``: kernels and test predictions of a code mixture;
- ``gaussian``: Gaussian expectations and quadrature grids;
- ``deep``: deep (L = 2) networks on class-structured tasks: per-layer tilts, codes and kernels;
- ``layer``: one layer's single-neuron measure with a class-shared shift, its modes (Laplace);
- ``classgrid``: the first layer's class-mean measure integrated on a grid;
- ``shifted``: the one-input law of a deep layer (shifted Gaussian, tilted in phi and phi^2);
- ``classmatrix``: the algebra of class-structured P x P matrices;
- ``predictions``: :func:`nonlazy_predictions`, the JSON dict of ``widebayes theory``.
"""

from widebayes.theory.nonlazy.predictions import nonlazy_predictions

__all__ = ["nonlazy_predictions"]
