"""Shared test configuration: strict JAX (as optimistix does) and a tiny-example budget."""

import jax
from hypothesis import settings

jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")
