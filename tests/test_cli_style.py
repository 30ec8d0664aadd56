"""One command-line style (docs/cli.md): every flag of every command line is ``--snake_case``, and no command
line takes a positional argument. Read from the flag definitions in the source, so adding a
``--hyphen-name`` or a positional path anywhere fails here."""

import ast
import pathlib

import pytest

from vla_jax.train import testing

COMMAND_LINES = sorted(
    [*testing.REPO.glob("tools/*.py"), *testing.REPO.glob("benchmarks/*.py"),
     testing.REPO / "vla_jax" / "serve" / "__main__.py", testing.REPO / "vla_jax" / "train" / "loop.py"])
ABSL_DEFINES = {"DEFINE_string", "DEFINE_integer", "DEFINE_float", "DEFINE_bool", "DEFINE_boolean", "DEFINE_enum",
                "DEFINE_list", "DEFINE_multi_string", "DEFINE_config_file", "DEFINE_config_dict"}


def flag_names(path: pathlib.Path) -> list[str]:
    """Every flag a file defines: argparse ``add_argument`` first arguments and absl ``DEFINE_*`` names."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        if node.func.attr == "add_argument":
            names += [first.value] + [a.value for a in node.args[1:] if isinstance(a, ast.Constant)]
        elif node.func.attr in ABSL_DEFINES:
            names.append("--" + first.value)
    return names


def test_every_command_line_is_found_with_flags():
    with_flags = [p for p in COMMAND_LINES if flag_names(p)]
    assert len(with_flags) >= 20, [p.name for p in with_flags]
    assert any(p.name == "evaluate.py" for p in with_flags) and any(p.name == "loop.py" for p in with_flags)


@pytest.mark.parametrize("path", [p for p in COMMAND_LINES if flag_names(p)], ids=lambda p: p.name)
def test_flags_are_snake_case_and_never_positional(path):
    for name in flag_names(path):
        assert name.startswith("--") or (name.startswith("-") and len(name) == 2), \
            f"{path.name}: positional argument {name!r}; name it (--{name}=...), see docs/cli.md"
        assert name == name.lower() and "-" not in name.lstrip("-"), \
            f"{path.name}: flag {name!r} is not --snake_case (docs/cli.md)"


def test_every_command_line_parses_on_the_oldest_supported_python():
    """Python before 3.12 does not read 3.12-only syntax (same quotes nested in an f-string): every command
    line parses on the interpreter running the tests."""
    for path in COMMAND_LINES:
        ast.parse(path.read_text(), filename=str(path))
