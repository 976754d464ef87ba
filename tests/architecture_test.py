"""The house rules of the package, checked on its source: small functions, no private imports
across modules, one argument order, one name for lambda."""

import ast
import inspect
import io
import pathlib
import tokenize

import jax.numpy as jnp
import optax
import pytest

import optax_l1

PACKAGE = pathlib.Path(optax_l1.__file__).parent
MAX_CODE_LINES = 60


def _code_lines(src: str, node: ast.AST) -> int:
    """Lines of a function holding code: no blank lines, comments or docstring."""
    body = getattr(node, "body", [])
    doc = None
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        doc = (body[0].lineno, body[0].end_lineno)
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type in skip or tok.type == tokenize.ENDMARKER:
            continue
        for line in range(tok.start[0], tok.end[0] + 1):
            inside = node.lineno <= line <= node.end_lineno
            if inside and not (doc and doc[0] <= line <= doc[1]):
                lines.add(line)
    return len(lines)


def _functions():
    for path in sorted(PACKAGE.glob("*.py")):
        src = path.read_text()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.name}:{node.name}", _code_lines(src, node)


def test_the_size_counter_counts_code_only():
    src = 'def f(x):\n    """Doc.\n\n    More."""\n    # comment\n\n    y = x\n    return y\n'
    (node,) = ast.parse(src).body
    assert _code_lines(src, node) == 3


def test_no_function_over_60_code_lines():
    sizes = dict(_functions())
    assert len(sizes) > 50  # the walk found the package
    too_long = {name: n for name, n in sizes.items() if n > MAX_CODE_LINES}
    assert not too_long, too_long


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optax_l1."):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name[0] == "_"]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id.startswith("_")
                and node.attr.startswith("_")
                and path.stem != node.value.id
            ):
                offenders.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not offenders, offenders


# The one argument-order rule (CONTRIBUTING.md): a transform's defining argument is its only
# positional one; every hyperparameter after it is keyword-only.
DEFINING = {
    "l1_prox": "strength",
    "group_l1_prox": "strength",
    "proximal": "prox",
    "add_l1_subgradient": "strength",
    "sparsity_target": "target",
    "with_preconditioned_l1": "optimizer",
    "proximal_adam": "learning_rate",
    "proximal_adagrad": "learning_rate",
    "ftrl": "learning_rate",
}


@pytest.mark.parametrize("name", sorted(DEFINING))
def test_one_positional_argument_then_keywords(name):
    params = list(inspect.signature(getattr(optax_l1, name)).parameters.values())
    assert params[0].name == DEFINING[name]
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), params


def test_lambda_is_called_strength_everywhere():
    for name in sorted(DEFINING):
        args = inspect.signature(getattr(optax_l1, name)).parameters
        assert "l1" not in args, name


def test_a_swapped_positional_call_is_refused():
    with pytest.raises(TypeError, match="positional"):
        optax_l1.l1_prox(0.01, 0.1)  # the 0.1 form l1_prox(strength, learning_rate)
    with pytest.raises(TypeError, match="positional"):
        optax_l1.proximal_adam(0.1, 0.01)
    with pytest.raises(TypeError, match="'l1'"):
        optax_l1.ftrl(0.1, l1=0.5)  # renamed to `strength`


def test_every_public_transform_is_a_gradient_transformation_with_extra_args():
    lr = 0.1
    transforms = [
        optax_l1.l1_prox(0.1, learning_rate=lr),
        optax_l1.group_l1_prox(0.1, learning_rate=lr, axis=0),
        optax_l1.proximal(lambda z, step: z, learning_rate=lr),
        optax_l1.add_l1_subgradient(0.1),
        optax_l1.sparsity_target(0.5, ramp_steps=3),
        optax_l1.with_preconditioned_l1(
            optax.adam(lr),
            strength=0.1,
            learning_rate=lr,
            eps=1e-8,
            eps_root=0.0,
            bias_correction_decay=0.999,
            unseen="shrink",
        ),
        optax_l1.proximal_adam(lr, strength=0.1),
        optax_l1.proximal_adagrad(lr, strength=0.1),
        optax_l1.ftrl(lr, strength=0.1),
    ]
    params = {"w": jnp.ones((2, 3))}
    for tx in transforms:
        assert isinstance(tx, optax.GradientTransformationExtraArgs)
        updates, _ = tx.update(params, tx.init(params), params, unused_extra_arg=1)
        assert updates["w"].shape == (2, 3)
