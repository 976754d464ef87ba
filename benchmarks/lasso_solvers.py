r"""Lasso solvers: time to a relative objective gap of 1e-6 against scikit-learn's optimum.

Objective (scikit-learn's ``Lasso`` convention, no intercept; X standardized, y centered):

    f(w) = 0.5 * mean((X w - y)^2) + alpha * ||w||_1

Problems: scikit-learn's bundled diabetes data (442 x 10), and a synthetic 5000 x 1000 design
(AR(1)-correlated Gaussian features, rho = 0.5) with a known truth of 50 non-zeros and unit
noise. Solvers:

  * ``optax_l1 ISTA``: ``optax.chain(optax.sgd(1/L), optax_l1.l1_prox(alpha, learning_rate=1/L))``;
  * ``optax_l1 FISTA``: Beck-Teboulle acceleration written with ``optax_l1.soft_threshold``;
  * ``jaxopt PG`` / ``jaxopt FISTA``: ``jaxopt.ProximalGradient(prox=prox_lasso,
    stepsize=1/L, acceleration=False/True)`` (its own ``run``, jitted);
  * ``sklearn Lasso``: coordinate descent, ``tol=0`` and the smallest ``max_iter`` (epochs)
    that reaches the gap.

``L`` is the largest eigenvalue of ``X^T X / n``. The reference ``f*`` is the smaller of
scikit-learn at ``tol=1e-14`` and a long FISTA run, all in float64. For each solver the
number of iterations that first reaches ``(f(w) - f*) / f* <= 1e-6`` is found from an
(untimed) trajectory; then exactly that many iterations are timed, all solvers jitted, warmed
up and interleaved round-robin in one process (median of ``--reps``). Support recovery on
the synthetic problem: precision/recall of the non-zeros against the truth.

    python benchmarks/lasso_solvers.py            # 10 s on 2 quiet cores, ~2 min when loaded
    python benchmarks/lasso_solvers.py --quick    # 500 x 100 synthetic, a few reps (seconds)
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_l1

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

GAP = 1e-6


@dataclass
class Problem:
    name: str
    X: np.ndarray
    y: np.ndarray
    alpha: float
    truth: np.ndarray | None = None
    L: float = 0.0
    f_star: float = 0.0
    ref_w: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def objective(self, w: np.ndarray) -> float:
        w = np.asarray(w, np.float64)
        r = self.X @ w - self.y
        return 0.5 * float(np.mean(r * r)) + self.alpha * float(np.abs(w).sum())

    def gap(self, w) -> float:
        return (self.objective(w) - self.f_star) / self.f_star


def standardize(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = (X - X.mean(0)) / X.std(0)
    return np.asfortranarray(X), y - y.mean()


def diabetes(alpha_frac: float) -> Problem:
    from sklearn.datasets import load_diabetes

    X, y = standardize(*load_diabetes(return_X_y=True))
    alpha_max = np.abs(X.T @ y).max() / len(y)
    return Problem("diabetes 442x10", X, y, alpha_frac * alpha_max)


def synthetic(n: int, p: int, k: int, rho: float, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, p))
    X = np.empty((n, p))
    X[:, 0] = Z[:, 0]
    for j in range(1, p):  # AR(1) along features: corr(X_i, X_j) = rho^|i-j|
        X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho**2) * Z[:, j]
    truth = np.zeros(p)
    support = rng.choice(p, k, replace=False)
    truth[support] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 2.0, k)
    y = X @ truth + rng.standard_normal(n)
    X, y = standardize(X, y)
    truth = truth * 1.0  # standardization rescales columns by ~1; support is unchanged
    alpha = float(np.sqrt(2 * np.log(p) / n))  # sigma * sqrt(2 log p / n), sigma = 1
    return Problem(f"synthetic {n}x{p}, {k} non-zeros", X, y, alpha, truth=truth)


# ----------------------------------------------------------------------------- JAX solvers


@dataclass
class Solver:
    """A jittable iteration on ``data = (X, y)``: ``init(data)``, ``step(carry, data)``, ``w``.

    ``run_k(k)``, when given, is the library's own jitted ``run(data)`` for ``k`` iterations.
    """

    name: str
    init: Callable[[Any], Any]
    step: Callable[[Any, Any], Any]
    w: Callable[[Any], jax.Array]
    run_k: Callable[[int], Callable[[Any], jax.Array]] | None = None


def loss(w, X, y):
    r = X @ w - y
    return 0.5 * jnp.mean(r * r)


grad = jax.grad(loss)


def jax_solvers(prob: Problem, dtype, with_jaxopt: bool) -> list[Solver]:
    p = prob.X.shape[1]
    lr, alpha = 1.0 / prob.L, prob.alpha

    def zeros():
        return jnp.zeros(p, dtype)

    tx = optax.chain(optax.sgd(lr), optax_l1.l1_prox(alpha, learning_rate=lr))

    def ista_step(c, data):
        w, s = c
        u, s = tx.update(grad(w, *data), s, w)
        return optax.apply_updates(w, u), s

    solvers = [
        Solver("optax_l1 ISTA", lambda data: (zeros(), tx.init(zeros())), ista_step, lambda c: c[0])
    ]

    def fista_step(c, data):
        x, z, t = c
        x_new = optax_l1.soft_threshold(z - lr * grad(z, *data), lr * alpha)
        t_new = (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)) / 2.0
        return x_new, x_new + ((t - 1.0) / t_new) * (x_new - x), t_new

    solvers.append(
        Solver(
            "optax_l1 FISTA",
            lambda data: (zeros(), zeros(), jnp.ones((), dtype)),
            fista_step,
            lambda c: c[0],
        )
    )
    if with_jaxopt:
        import jaxopt
        from jaxopt.prox import prox_lasso

        for accel, name in ((False, "jaxopt PG"), (True, "jaxopt FISTA")):

            def make(maxiter, accel=accel):
                return jaxopt.ProximalGradient(
                    fun=loss,
                    prox=prox_lasso,
                    stepsize=lr,
                    maxiter=maxiter,
                    tol=0.0,
                    acceleration=accel,
                    jit=True,
                )

            base = make(1)

            def init(data, base=base):
                return (zeros(), base.init_state(zeros(), alpha, *data))

            def step(c, data, base=base):
                w, s = c
                return tuple(base.update(w, s, alpha, *data))

            def run_k(k, make=make):
                solver = make(max(int(k), 1))
                return jax.jit(lambda data: solver.run(zeros(), alpha, *data).params)

            solvers.append(Solver(name, init, step, lambda c: c[0], run_k))
    return solvers


def iterations_to_gap(
    prob: Problem, s: Solver, data, max_iter: int, chunk: int
) -> tuple[int, float]:
    """First iteration count whose iterate reaches the gap (untimed), or (-1, best gap)."""

    @jax.jit
    def run_chunk(c, data):
        def body(c, _):
            c = s.step(c, data)
            return c, s.w(c)

        return jax.lax.scan(body, c, None, length=chunk)

    c, done, best = jax.jit(s.init)(data), 0, np.inf
    while done < max_iter:
        c, ws = run_chunk(c, data)
        gaps = [prob.gap(w) for w in np.asarray(ws, np.float64)[: max_iter - done]]
        hit = np.nonzero(np.asarray(gaps) <= GAP)[0]
        if hit.size:
            return done + int(hit[0]) + 1, float(gaps[hit[0]])
        best = min(best, min(gaps))
        done += chunk
    return -1, float(best)


def timed_runner(s: Solver, k: int) -> Callable[[Any], jax.Array]:
    if s.run_k is not None:
        return s.run_k(k)

    @jax.jit
    def run(data):
        return s.w(jax.lax.fori_loop(0, k, lambda i, c: s.step(c, data), s.init(data)))

    return run


# ----------------------------------------------------------------------------- scikit-learn


def sklearn_fit(prob: Problem, max_iter: int, tol: float = 0.0) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = Lasso(alpha=prob.alpha, fit_intercept=False, tol=tol, max_iter=max_iter)
        return m.fit(prob.X, prob.y).coef_


def sklearn_epochs_to_gap(prob: Problem, max_iter: int) -> tuple[int, float]:
    lo, hi = 0, 1
    while True:  # doubling, then bisection on the number of epochs
        g = prob.gap(sklearn_fit(prob, hi))
        if g <= GAP:
            break
        if hi >= max_iter:
            return -1, g
        lo, hi = hi, min(2 * hi, max_iter)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if prob.gap(sklearn_fit(prob, mid)) <= GAP:
            hi = mid
        else:
            lo = mid
    return hi, prob.gap(sklearn_fit(prob, hi))


# ----------------------------------------------------------------------------- main


def prepare(prob: Problem, dtype, with_jaxopt: bool) -> None:
    prob.L = float(np.linalg.eigvalsh(prob.X.T @ prob.X / prob.X.shape[0])[-1])
    ref = sklearn_fit(prob, 1_000_000, tol=1e-14)
    f_ref = prob.objective(ref)
    # A long FISTA run in float64 numpy guards against scikit-learn stopping short.
    X, y, lr, a = prob.X, prob.y, 1.0 / prob.L, prob.alpha
    n = X.shape[0]
    x = z = ref.copy()
    t = 1.0
    for _ in range(300):
        v = z - lr * (X.T @ (X @ z - y)) / n
        x_new = np.sign(v) * np.maximum(np.abs(v) - lr * a, 0.0)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    f_fista = prob.objective(x)
    prob.f_star, prob.ref_w = (f_ref, ref) if f_ref <= f_fista else (f_fista, x)
    print(
        f"{prob.name}: alpha={prob.alpha:.5g}, L={prob.L:.5g}, f*={prob.f_star:.12g} "
        f"(sklearn tol=1e-14: {f_ref:.12g}, polished FISTA: {f_fista:.12g}), "
        f"reference non-zeros: {int(np.count_nonzero(prob.ref_w))}",
        flush=True,
    )


def support_pr(w: np.ndarray, truth: np.ndarray | None) -> tuple[float, float]:
    if truth is None:
        return float("nan"), float("nan")
    est, true = np.asarray(w) != 0, truth != 0
    tp = int(np.sum(est & true))
    return tp / max(int(est.sum()), 1), tp / max(int(true.sum()), 1)


def progress(k: int, unit: str, max_iter: int) -> str:
    """``k`` iterations to the gap, or that ``max_iter`` did not reach it."""
    return f"{k} {unit}" if k > 0 else f"gap not reached in {max_iter} {unit}"


def bench_problem(prob: Problem, args, dtype, with_jaxopt: bool) -> list[dict[str, Any]]:
    prepare(prob, dtype, with_jaxopt)
    data = (jnp.asarray(prob.X, dtype), jnp.asarray(prob.y, dtype))
    entries = []
    for s in jax_solvers(prob, dtype, with_jaxopt):
        k, g = iterations_to_gap(prob, s, data, args.max_iter, args.chunk)
        reached = k > 0
        k_run = k if reached else args.max_iter
        run = functools.partial(timed_runner(s, k_run), data)
        w = np.asarray(jax.block_until_ready(run()))  # compile + warm up
        run()
        entries.append({"solver": s.name, "iters": k, "fn": run, "w": w, "reached": reached})
        print(f"  {s.name}: {progress(k, 'iterations', args.max_iter)}", flush=True)
    k, g = sklearn_epochs_to_gap(prob, args.max_iter)
    reached = k > 0
    k_run = k if reached else args.max_iter
    w = sklearn_fit(prob, k_run)
    entries.append(
        {
            "solver": "sklearn Lasso (CD)",
            "iters": k,
            "fn": lambda k_run=k_run: sklearn_fit(prob, k_run),
            "w": w,
            "reached": reached,
        }
    )
    print(f"  sklearn Lasso: {progress(k, 'epochs', args.max_iter)}", flush=True)

    def arm(fn):
        def call(n):
            for _ in range(n):
                jax.block_until_ready(fn())

        return call

    arms = [arm(e["fn"]) for e in entries]
    for a in arms:
        a(1)
    times = _common.interleaved_times(arms, args.reps, 1)
    out = []
    for i, e in enumerate(entries):
        med, lo, hi = _common.median_ci(times[:, i])
        prec, rec = support_pr(e["w"], prob.truth)
        out.append(
            {
                "problem": prob.name,
                "solver": e["solver"],
                "iters": e["iters"],
                "reached": e["reached"],
                "time_ms": 1e3 * med,
                "time_ci_ms": [1e3 * lo, 1e3 * hi],
                "gap": prob.gap(e["w"]),
                "nnz": int(np.count_nonzero(e["w"])),
                "precision": prec,
                "recall": rec,
            }
        )
    if prob.truth is not None:
        prec, rec = support_pr(prob.ref_w, prob.truth)
        print(f"  reference optimum support: precision {prec:.3f}, recall {rec:.3f}")
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = _common.Parser(__doc__, quick="500 x 100 synthetic, 3 reps")
    p.add_scaled("--n", 5000, 500, type=_common.positive_int, help="synthetic samples")
    p.add_scaled("--p", 1000, 100, type=_common.positive_int, help="synthetic features")
    p.add_scaled(
        "--k", 50, 10, type=_common.positive_int, help="non-zeros in the synthetic truth (<= --p)"
    )
    p.add_argument("--rho", type=float, default=0.5, help="AR(1) feature correlation")
    p.add_argument(
        "--diabetes-alpha-frac", type=_common.positive_float, default=0.01, help="alpha / alpha_max"
    )
    p.add_scaled("--reps", 7, 3, type=_common.positive_int, help="timed runs per solver")
    p.add_scaled(
        "--max-iter",
        100_000,
        20_000,
        type=_common.positive_int,
        help="most iterations (epochs for sklearn) to reach the gap",
    )
    p.add_scaled(
        "--chunk", 100, 50, type=_common.positive_int, help="iterations per trajectory chunk"
    )
    p.add_argument("--float32", action="store_true", help="JAX solvers in float32 (default f64)")
    p.add_argument("--no-jaxopt", action="store_true", help="leave out the jaxopt solvers")
    p.add_json()
    args = p.parse(argv)
    if args.k > args.p:
        p.error(f"--k ({args.k}) must be <= --p ({args.p})")
    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float32 if args.float32 else jnp.float64
    info = _common.header(
        "lasso_solvers",
        synthetic=f"{args.n}x{args.p}, k={args.k}, rho={args.rho}",
        diabetes="442x10",
        dtype=jnp.dtype(dtype).name,
        gap=GAP,
        reps=args.reps,
    )
    with_jaxopt = not args.no_jaxopt
    if with_jaxopt:
        try:
            import jaxopt  # noqa: F401
            from jaxopt.prox import prox_lasso  # noqa: F401
        except Exception as e:  # jaxopt is unmaintained; it may not import with a new jax
            print(f"note: jaxopt unavailable ({type(e).__name__}: {e}); its rows are skipped")
            with_jaxopt = False
    print("jaxopt: " + ("included" if with_jaxopt else "skipped"))

    t0 = time.perf_counter()
    results = []
    for prob in (
        diabetes(args.diabetes_alpha_frac),
        synthetic(args.n, args.p, args.k, args.rho, seed=0),
    ):
        results += bench_problem(prob, args, dtype, with_jaxopt)
    headers = ["problem", "solver", "iterations to 1e-6", "time ms (median, 95% CI)", "gap"]
    headers += ["non-zeros", "support precision", "support recall"]
    rows = []
    for r in results:
        rows.append(
            [
                r["problem"],
                r["solver"],
                r["iters"] if r["reached"] else f"not reached in {args.max_iter}",
                f"{r['time_ms']:.2f} ({r['time_ci_ms'][0]:.2f}–{r['time_ci_ms'][1]:.2f})",
                f"{r['gap']:.1e}",
                r["nnz"],
                "—" if np.isnan(r["precision"]) else f"{r['precision']:.3f}",
                "—" if np.isnan(r["recall"]) else f"{r['recall']:.3f}",
            ]
        )
    print()
    print(_common.markdown_table(headers, rows))
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    _common.write_json(args.json, {"info": info, "results": results})
    return results


if __name__ == "__main__":
    main()
