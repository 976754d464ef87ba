"""Shared test configuration: strict JAX (as optimistix does) and a tiny-example budget."""

import jax
from hypothesis import settings

jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")


# The quick subset (`pytest -m "not slow"`, CONTRIBUTING.md): everything except the files that
# start subprocesses (examples, benchmarks' smoke runs, several processes, 8-device sharding),
# build the docs, or compile hundreds of steps (the optax gauntlet, sparsity_target's tests);
# `pytest` alone still runs all of them.
SLOW_FILES = frozenset(
    {
        "benchmarks_test.py",
        "checkpoint_test.py",
        "docs_test.py",
        "examples_test.py",
        "gauntlet_test.py",
        "multiprocess_test.py",
        "sharding_test.py",
        "target_test.py",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker("slow")
