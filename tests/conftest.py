"""Shared test configuration: strict JAX (as optimistix does) and a tiny-example budget."""

import os
import shutil
import tempfile

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


# One compilation cache per test run, shared by the xdist workers and the subprocesses they
# start (examples, benchmarks' --quick runs): a step compiled by one test is loaded, not
# compiled again, by the next test that compiles the same program. The directory is new and
# empty at each run (nothing carries over between runs) and is removed at the end; a run that
# sets JAX_COMPILATION_CACHE_DIR itself keeps its own.
CACHE_CONFIG = {  # cache every program, however small or quick to compile
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


def pytest_configure(config):
    if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config._optax_l1_cache = tempfile.mkdtemp(prefix="optax_l1_jax_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config._optax_l1_cache  # workers inherit it
        for name, value in CACHE_CONFIG.items():
            os.environ.setdefault(name.upper(), str(value))
    # jax read its environment when conftest imported it: set this process's config too.
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        for name, value in CACHE_CONFIG.items():
            if name.upper() in os.environ:
                jax.config.update(name, type(value)(os.environ[name.upper()]))


def pytest_unconfigure(config):
    cache = getattr(config, "_optax_l1_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
