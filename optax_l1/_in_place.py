"""Elementwise state updates written back into the state's own buffers, chunk by chunk.

An optimizer whose new state is an elementwise function of its old state (FTRL's two
accumulators) reads an old state leaf in more than one XLA fusion: the pass that writes its
new value and the passes of the other leaves that use the old one (and, for FTRL, optax's
``p + u``, fused with the update outside the transform). Nothing orders the in-place write
after the last read, so with the state donated XLA keeps a full-size copy of the old leaf
(and XLA:CPU drops ``optimization_barrier`` before fusion). A loop over chunks orders it:
each step writes the new chunk of every state in turn, the write of one at an offset that
XLA cannot fold without the chunk written before it (:func:`_after`), so a state whose old
value the others read is written after them; what follows the loop reads the new state,
which XLA cannot recompute from the old one across the loop. No temporary but a few scalars.

The loop slices the flattened leaf at dynamic offsets, which a partitioned (sharded) array
would gather first; it is used only when the computation runs on one device, and only on
CPU (where the copy was measured; on a GPU each chunk would be a kernel launch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

CHUNK = 1 << 16  # elements per loop step (256 KiB of f32); 2^14-2^18 measured alike, 2^20 slower


def applies(x: jax.Array) -> bool:
    """Whether :func:`updated` loops over ``x``: on one CPU device (on a GPU each chunk
    would be a kernel launch, and its fusions are another matter), at least 2 elements (a
    one-step loop would be inlined), int32 offsets."""
    one_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    return one_cpu and 2 <= int(jnp.size(x)) < 2**31


def _after(at: jax.Array, written: jax.Array) -> jax.Array:
    """``at``, in a form XLA cannot fold: it reads ``written`` (at ``at``), so a slice at the
    result comes after the write that made ``written``. ``max(at, at - isnan(x))`` is ``at``."""
    x = lax.dynamic_slice(written, (at,), (1,))[0]
    return jnp.maximum(at, at - jnp.isnan(x).astype(at.dtype))


def updated(
    fn: Callable[..., Sequence[jax.Array]],
    inputs: Sequence[jax.Array],
    states: Sequence[jax.Array],
    *,
    chunk: int = CHUNK,
) -> tuple[jax.Array, ...]:
    """``fn(*inputs, *states)``, the new states, computed into the old states' buffers.

    ``fn`` is elementwise: it maps chunks of the same positions of ``inputs`` (read only)
    and ``states`` to the new ``states`` at those positions, in the states' shapes and
    dtypes. All arrays have one shape. The states are written in their order, so the new
    value of a state may read the old values of itself and of the states after it, not of
    those before it (their chunk is already new when it is computed).
    What ``fn`` gives on the whole arrays, to rounding (XLA:CPU contracts multiply-adds
    differently in loops of other lengths).
    """
    shape = jnp.shape(states[0])
    size = int(jnp.size(states[0]))
    if not applies(states[0]):
        return tuple(fn(*inputs, *states))
    steps = max(2, -(-size // chunk))
    width = -(-size // steps)
    flat_inputs = [jnp.reshape(x, (-1,)) for x in inputs]

    def body(i, flat_states):
        flat_states = list(flat_states)
        at = jnp.minimum(i * width, size - width)  # the last chunk overlaps the one before
        for k in range(len(flat_states)):
            if k:
                at = _after(at, flat_states[k - 1])
            old = [lax.dynamic_slice(s, (at,), (width,)) for s in flat_states]
            new = fn(*(lax.dynamic_slice(x, (at,), (width,)) for x in flat_inputs), *old)[k]
            fresh = at + lax.iota(jnp.int32, width) >= i * width  # not written at step i - 1
            flat_states[k] = lax.dynamic_update_slice(
                flat_states[k], jnp.where(fresh, new, old[k]), (at,)
            )
        return flat_states

    flat_states = lax.fori_loop(0, steps, body, [jnp.reshape(s, (-1,)) for s in states])
    return tuple(jnp.reshape(s, shape) for s in flat_states)
