"""The shape of the library, checked from its source: imports go only downward and never in a
loop, and only the storage module moves files into place.

A module's layer is the longest prefix of its name in `LAYERS`; it may import modules of its
own layer or of a lower one. Every import counts, including those inside functions and under
`TYPE_CHECKING`: a loop that is deferred is still a loop a reader has to untangle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "healthgpt"

# Lowest first. A module may import its own layer or any layer listed before it.
LAYERS: list[tuple[str, ...]] = [
    ("healthgpt.settings",),  # the environment, read in one place
    ("healthgpt.paths", "healthgpt.storage", "healthgpt.progress"),
    ("healthgpt.data.tasks",),  # the task vocabulary: tasks, stages, placeholders, prompts
    ("healthgpt.data.errors", "healthgpt.data.schema", "healthgpt.data.vocab"),
    ("healthgpt.data.limits",),
    ("healthgpt.data.options",),
    ("healthgpt.data.json_rows",),
    ("healthgpt.data.shards",),
    ("healthgpt.data.decode",),  # image, DICOM, NIfTI decoding and de-identification
    ("healthgpt.data.sources", "healthgpt.data.sources.registry"),  # readers, the registry
    ("healthgpt.data.ingest",),  # a reader run into shards, and its checks
    ("healthgpt.data.mixture",),  # tasks, dedup, decontamination, sampling, build, card
    ("healthgpt.data.samples",),  # the bundled sample sources
    ("healthgpt.model",),
    ("healthgpt.train",),
    ("healthgpt.eval",),
    ("healthgpt.serve",),  # the inference wrapper and the web app (ask, generate)
    ("healthgpt.cli",),
]
# The one module allowed to rename files into place.
ATOMIC_MODULE = PACKAGE / "storage.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project modules `path` imports: `from a.b import c` names `a.b.c` when that is a
    module, else `a.b`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] == "healthgpt")


def layer_of(name: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or name.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return best[1] if best else None


def import_graph() -> dict[str, set[str]]:
    known = library_modules()
    return {name: set(imported_modules(path, known)) - {name} for name, path in known.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_cycle_finder_finds_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_loops():
    cycles = find_cycles(import_graph())
    assert not cycles, f"import loops: {cycles}"


def test_every_module_has_a_layer():
    unplaced = [
        name
        for name in library_modules()
        if name not in ("healthgpt", "healthgpt.data") and layer_of(name) is None
    ]
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_imports_only_go_downward():
    upward = []
    for name, targets in import_graph().items():
        own = layer_of(name)
        for target in sorted(targets):
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{name} -> {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_library_imports_no_dagster():
    offenders = [
        name
        for name, path in library_modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(
            (alias.name if isinstance(node, ast.Import) else node.module or "").startswith(
                "dagster"
            )
            for alias in node.names
        )
    ]
    assert not offenders, f"healthgpt/ must not import Dagster: {offenders}"


def rename_calls(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Calls that move a file into place: `os.replace` / `os.rename`, and `.replace(x)` /
    `.rename(x)` with one positional argument (a `Path`'s; `str.replace` takes two and a
    dataframe's `rename` takes a mapping)."""
    source = path.read_text()
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        if attr not in ("replace", "rename"):
            continue
        if isinstance(owner, ast.Name) and owner.id == "os":
            yield f"{path.relative_to(root)}:{node.lineno}: os.{attr}"
        elif (
            len(node.args) == 1
            and not node.keywords
            and not isinstance(node.args[0], ast.Dict)
            and not (isinstance(owner, ast.Name) and owner.id in ("dataclasses", "shutil"))
        ):
            yield f"{path.relative_to(root)}:{node.lineno}: .{attr}({ast.unparse(node.args[0])})"


@pytest.mark.parametrize("folder", ["healthgpt", "pipelines", "scripts", "benchmarks"])
def test_files_are_moved_into_place_only_by_the_storage_module(folder):
    found = [
        call
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ATOMIC_MODULE
        for call in rename_calls(path)
    ]
    assert not found, "rename outside healthgpt/storage.py (use its atomic helpers):\n" + (
        "\n".join(found)
    )


def test_rename_finder_sees_each_form(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "os.replace(a, b)\n"
        "os.rename(a, b)\n"
        "tmp.replace(path)\n"
        "tmp.rename(path)\n"
        "text.replace('a', 'b')\n"
        "frame.rename({'a': 'b'})\n"
    )
    found = [line.rsplit(": ", 1)[1] for line in rename_calls(sample, tmp_path)]
    assert found == ["os.replace", "os.rename", ".replace(path)", ".rename(path)"]
