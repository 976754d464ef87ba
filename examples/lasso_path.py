r"""The lasso regularization path on the diabetes data: optax_l1 ISTA vs scikit-learn.

scikit-learn's ``Lasso`` minimizes

.. math::

  \frac{1}{2n}\|y - Xw\|_2^2 + \alpha \|w\|_1 .

ISTA is gradient descent on the smooth part with step ``1/L`` (``L`` the largest eigenvalue
of ``X^T X / n``) followed by soft-thresholding at ``alpha / L`` -- in Optax terms
``optax.chain(optax.sgd(1 / L), optax_l1.l1_prox(alpha, 1 / L))`` applied to the loss
``0.5 * mean((X w - y)^2)``. The script runs it, jitted, along a decreasing grid of
``alpha`` (``alpha_max = max|X^T y| / n`` down to ``alpha_max * eps``), warm-starting each
problem from the previous solution, and compares the coefficients with
``sklearn.linear_model.lasso_path`` on the same data (standardized ``X``, centered ``y``).
It prints the largest absolute deviation and saves the two paths overlaid as a PNG.

It runs in float64 by default, so that the deviation measures the solver; the features are
strongly correlated (``X^T X / n`` is ill-conditioned), and in float32 (``--float32``)
rounding alone moves the solution at the smallest ``alpha`` by about 1e-3.

``alpha`` is a traced value inside the compiled solver (``l1_prox`` accepts arrays), so
the whole path is one ``lax.scan`` over the grid and compiles once.

Run::

    python examples/lasso_path.py
    python examples/lasso_path.py --n-alphas 100 --eps 1e-4 --out out/path.png
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import fraction, positive_int
from sklearn.datasets import load_diabetes
from sklearn.linear_model import lasso_path
from sklearn.preprocessing import StandardScaler

import optax_l1


def make_path_solver(x: jax.Array, y: jax.Array, step: float, max_iter: int, tol: float):
    """A jitted ``alphas -> coefs`` running warm-started ISTA for each alpha in turn."""

    def loss(w):
        return 0.5 * jnp.mean((x @ w - y) ** 2)

    def solve(w, alpha):
        tx = optax.chain(optax.sgd(step), optax_l1.l1_prox(alpha, learning_rate=step))

        def cond(carry):
            _, _, i, change = carry
            return (i < max_iter) & (change > tol)

        def body(carry):
            w, state, i, _ = carry
            updates, state = tx.update(jax.grad(loss)(w), state, w)
            return optax.apply_updates(w, updates), state, i + 1, jnp.max(jnp.abs(updates))

        init = (w, tx.init(w), jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, w.dtype))
        w, _, n_iter, _ = jax.lax.while_loop(cond, body, init)
        return w, (w, n_iter)

    @jax.jit
    def path(alphas):
        w0 = jnp.zeros(x.shape[1], x.dtype)
        _, (coefs, n_iters) = jax.lax.scan(solve, w0, alphas)
        return coefs, n_iters

    return path


def save_figure(alphas, ours, theirs, names, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, name in enumerate(names):
        c = colors[j % len(colors)]
        ax.plot(alphas, theirs[:, j], color=c, lw=4, alpha=0.35)
        ax.plot(alphas, ours[:, j], color=c, lw=1.2, ls="--", label=name)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set(
        xlabel=r"$\alpha$ (decreasing)",
        ylabel="coefficient",
        title="Lasso path, diabetes: scikit-learn (thick) vs optax_l1 ISTA (dashed)",
    )
    ax.axhline(0.0, color="k", lw=0.5)
    ax.legend(ncol=2, fontsize=8, title="feature")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--n-alphas", type=positive_int, default=50, help="points on the alpha grid"
    )
    parser.add_argument(
        "--eps", type=fraction, default=1e-3, help="alpha_min / alpha_max, in (0, 1)"
    )
    parser.add_argument(
        "--max-iter", type=positive_int, default=20_000, help="ISTA steps per alpha"
    )
    parser.add_argument(
        "--tol", type=float, default=None, help="stop when max|w change| <= tol (1e-9; f32: 1e-7)"
    )
    parser.add_argument(
        "--float32",
        action="store_true",
        help="run ISTA in float32 (the deviation then is float32 rounding, about 1e-3)",
    )
    parser.add_argument("--out", default="out/lasso_path.png", help="where to save the figure")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_alphas, args.eps = min(args.n_alphas, 10), max(args.eps, 1e-2)
    if not args.float32:
        jax.config.update("jax_enable_x64", True)  # optax_l1 keeps float64 in float64
    dtype = jnp.float32 if args.float32 else jnp.float64
    if args.tol is None:
        args.tol = 1e-7 if args.float32 else 1e-9

    data = load_diabetes()
    x = StandardScaler().fit_transform(data.data)
    y = data.target - data.target.mean()
    n = x.shape[0]
    lipschitz = float(np.linalg.eigvalsh(x.T @ x / n).max())
    alpha_max = float(np.max(np.abs(x.T @ y)) / n)
    alphas = np.geomspace(alpha_max, alpha_max * args.eps, args.n_alphas)
    print(
        f"diabetes: n={n}, d={x.shape[1]}, L={lipschitz:.3f}, alpha in "
        f"[{alphas[-1]:.4g}, {alphas[0]:.4g}] ({args.n_alphas} values), {jnp.dtype(dtype).name}"
    )

    t0 = time.perf_counter()
    _, sk_coefs, _ = lasso_path(x, y, alphas=alphas, tol=1e-12, max_iter=100_000)
    sk_coefs = sk_coefs.T  # (n_alphas, d)
    t_sk = time.perf_counter() - t0

    path = make_path_solver(
        jnp.asarray(x, dtype), jnp.asarray(y, dtype), 1.0 / lipschitz, args.max_iter, args.tol
    )
    t0 = time.perf_counter()
    coefs, n_iters = jax.block_until_ready(path(jnp.asarray(alphas, dtype)))
    t_ours = time.perf_counter() - t0
    coefs, n_iters = np.asarray(coefs, np.float64), np.asarray(n_iters)

    deviation = np.abs(coefs - sk_coefs)
    worst = np.unravel_index(np.argmax(deviation), deviation.shape)
    print(
        f"optax_l1 ISTA: {n_iters.sum()} steps in all ({n_iters.max()} at most per alpha), "
        f"{t_ours:.2f} s with compilation; scikit-learn lasso_path {t_sk:.2f} s"
    )
    print(f"largest |coef - sklearn coef| = {deviation.max():.3e}", end=" ")
    print(f"(feature {data.feature_names[worst[1]]}, alpha={alphas[worst[0]]:.4g}), ", end="")
    print(f"largest |coef| = {np.abs(sk_coefs).max():.3g}")
    differ = (coefs == 0) != (sk_coefs == 0)
    print(
        f"exact-zero pattern: {int(differ.sum())} of {differ.size} (alpha, feature) pairs differ "
        f"from scikit-learn (largest |coef| among them: "
        f"{np.max(np.abs(coefs - sk_coefs)[differ], initial=0.0):.1e})"
    )
    save_figure(alphas, coefs, sk_coefs, data.feature_names, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
