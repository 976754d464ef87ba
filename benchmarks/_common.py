"""Helpers shared by the benchmark scripts: environment header, paired timing, tables.

Not part of the optax_l1 package; the scripts import it as a sibling module
(``python benchmarks/<script>.py`` puts this folder first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_l1


def header(title: str, **sizes: Any) -> dict[str, Any]:
    """Prints (and returns) what the figures depend on: device, versions, cores, sizes."""
    info = {
        "benchmark": title,
        "device": str(jax.devices()[0]),
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "optax_l1": optax_l1.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "x64": bool(jax.config.jax_enable_x64),
    }
    print(f"# {title}")
    print(
        f"device: {info['device']} ({info['platform']}), cores: {info['cpu_count']}, "
        f"jax {info['jax']}, optax {info['optax']}, optax_l1 {info['optax_l1']}, "
        f"python {info['python']}, x64: {info['x64']}"
    )
    if sizes:
        print("sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
    info["sizes"] = sizes
    return info


def median_ci(x: Sequence[float], conf: float = 0.95) -> tuple[float, float, float]:
    """Median and a distribution-free confidence interval from order statistics.

    The interval ``[x_(j), x_(n-j+1)]`` covers the true median with probability
    ``1 - 2 P(Binomial(n, 1/2) <= j - 1)``; ``j`` is the largest with coverage >= ``conf``
    (for tiny ``n`` the interval is the full range).
    """
    a = np.sort(np.asarray(x, dtype=np.float64))
    n = a.size
    if n == 0:
        return math.nan, math.nan, math.nan
    cdf = np.cumsum([math.comb(n, i) for i in range(n + 1)]) / 2.0**n
    ok = np.nonzero(cdf <= (1.0 - conf) / 2.0)[0]
    j = int(ok[-1]) + 1 if ok.size else 1
    return float(np.median(a)), float(a[j - 1]), float(a[n - j])


def interleaved_times(arms: Sequence[Callable[[int], None]], reps: int, inner: int) -> np.ndarray:
    """Seconds per call of each arm, measured in rotating order, shape ``(reps, len(arms))``.

    Each arm runs ``inner`` calls and blocks until its results are ready. Rep ``r`` starts
    with arm ``r % len(arms)``, so no arm always runs first (or right after another).
    """
    k = len(arms)
    out = np.empty((reps, k))
    for r in range(reps):
        for j in range(k):
            i = (r + j) % k
            t0 = time.perf_counter()
            arms[i](inner)
            out[r, i] = (time.perf_counter() - t0) / inner
    return out


def calibrate_inner(arm: Callable[[int], None], min_time: float) -> int:
    """How many calls make one timed sample last at least ``min_time`` seconds."""
    t0 = time.perf_counter()
    arm(1)
    t = max(time.perf_counter() - t0, 1e-7)
    return max(1, math.ceil(min_time / t))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ramp_arg(text: str) -> str | float:
    """A ``--ramp`` flag's value for ``sparsity_target(ramp=...)``: a named shape, or a
    number (the exponent)."""
    return text if text in ("cubic", "linear") else float(text)


# ----------------------------------------------------------------------------- command line


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's layout and shows each option's default (unless its help does)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The benchmarks' ArgumentParser: ``HelpFormatter``, options whose default depends on
    ``--quick`` (``add_scaled``, filled by ``parse`` only where the user gave none) and a
    ``--json`` path checked at startup (``add_json``)."""

    def __init__(self, description: str | None, quick: str) -> None:
        super().__init__(description=description, formatter_class=HelpFormatter)
        self.add_argument("--quick", action="store_true", help=quick)
        self._scaled: dict[str, tuple[Any, Any]] = {}

    def add_scaled(self, flag: str, full: Any, quick: Any, *, help: str, **kwargs: Any) -> None:
        """``flag`` defaults to ``full``, or ``quick`` under ``--quick``."""
        sep = " " if "nargs" in kwargs else ","
        shown = f"(default: {_shown(full, sep)}; --quick: {_shown(quick, sep)})"
        action = self.add_argument(flag, default=None, help=f"{help} {shown}", **kwargs)
        self._scaled[action.dest] = (full, quick)

    def add_json(self, help: str = "write the results as JSON here") -> None:
        self.add_argument("--json", type=json_path, default=None, help=help)

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        args = self.parse_args(argv)
        for dest, (full, quick) in self._scaled.items():
            if getattr(args, dest) is None:
                setattr(args, dest, copy.copy(quick if args.quick else full))
        return args


def _shown(value: Any, sep: str) -> str:
    if isinstance(value, (list, tuple)):
        return sep.join(str(v) for v in value)
    return str(value)


def typed(name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool]):
    """An argparse type: ``convert(text)``, refused unless ``ok``; errors say ``name``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {name}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def int_at_least(low: int) -> Callable[[str], int]:
    return typed(f"an integer >= {low}", int, lambda v: v >= low)


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
positive_float = typed("a finite number > 0", float, lambda v: math.isfinite(v) and v > 0)
nonnegative_float = typed("a finite number >= 0", float, lambda v: math.isfinite(v) and v >= 0)
fraction = typed("a number in (0, 1)", float, lambda v: 0 < v < 1)


def choice(names: Sequence[str]) -> Callable[[str], str]:
    return typed("one of " + ", ".join(names), str, lambda v: v in names)


def float_dtype(text: str) -> str:
    """A floating-point dtype name (``float32``, ``bfloat16``, ...)."""
    try:
        ok = jnp.issubdtype(jnp.dtype(text), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected a floating-point dtype, got {text!r}")
    return text


def comma_list(item: Callable[[str], Any], *, empty: bool = False) -> Callable[[str], list[Any]]:
    """An argparse type: a comma list of ``item`` values (``empty``: ``""`` is ``[]``)."""
    name = f"a comma list of {getattr(item, '__name__', 'values')}"

    def parse(text: str) -> list[Any]:
        if not text:
            if empty:
                return []
            raise argparse.ArgumentTypeError(f"expected {name}, got an empty list")
        values = []
        for part in text.split(","):
            try:
                values.append(item(part.strip()))
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentTypeError(f"item {part!r} of {text!r}: {e}") from None
        return values

    parse.__name__ = name
    return parse


def json_path(text: str) -> str:
    """A ``--json`` path that ``write_json`` can write: checked before any work starts."""
    path = os.path.abspath(text)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    folder = os.path.dirname(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {folder!r} is not a folder")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {folder!r} is read-only")
    return text


def write_json(path: str | None, payload: Any) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=_jsonable)
    print(f"wrote {path}")


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def memory_stats(compiled: Any) -> dict[str, int]:
    """The sizes XLA's buffer assignment reports for a compiled executable."""
    ma = compiled.memory_analysis()
    keys = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    out = {k.replace("_size_in_bytes", ""): int(getattr(ma, k, 0) or 0) for k in keys}
    # Live at peak for a one-shot call: inputs, outputs not written in place, temporaries.
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def optional(name: str) -> Any:
    """``optax_l1.<name>`` when the installed optax_l1 has it, else None."""
    return getattr(optax_l1, name) if hasattr(optax_l1, name) else None


# ----------------------------------------------------------------------------- digits MLP
# Shared by frontier.py and target_sparsity.py (examples/ stay standalone on purpose).


def digits_split(seed: int, test_size: float) -> tuple[np.ndarray, ...]:
    """sklearn's bundled digits: a stratified split, standardized with training statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    mu, sd = xtr.mean(0), xtr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return (
        ((xtr - mu) / sd).astype(np.float32),
        ((xte - mu) / sd).astype(np.float32),
        ytr.astype(np.int32),
        yte.astype(np.int32),
    )


def init_mlp(layer_keys: Sequence[jax.Array], sizes: Sequence[int]) -> dict[str, Any]:
    """He-normal Dense layers ``dense_0 .. dense_{n-1}``, one PRNG key per layer."""
    return {
        f"dense_{i}": {
            "kernel": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m),
            "bias": jnp.zeros((n,)),
        }
        for i, (k, m, n) in enumerate(zip(layer_keys, sizes[:-1], sizes[1:], strict=True))
    }


def forward(params: dict[str, Any], x: jax.Array) -> jax.Array:
    n = len(params)
    for i in range(n):
        layer = params[f"dense_{i}"]
        x = x @ layer["kernel"] + layer["bias"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


def cross_entropy(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y).mean()


def accuracy(params: dict[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(forward(params, x), -1) == y)
