"""The rooms of ../shared/DESIGN.md, checked on the source: which package may import which. db/ never imports
torch, gradio, model or annotator; model/ never imports gradio or annotator; annotator/ and app.py reach the
model only through model.api and never import torch."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (function-level imports too), as dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if node.module == "model")
    return out


def _sources(*where: str) -> list[Path]:
    return [p for w in where for p in (sorted((ROOT / w).glob("*.py")) if (ROOT / w).is_dir() else [ROOT / w])]


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", _sources("db"), ids=lambda p: p.name)
def test_db_imports_no_torch_gradio_model_or_annotator(path):
    assert not {_top(m) for m in _imports(path)} & {"torch", "torchvision", "gradio", "model", "annotator"}


@pytest.mark.parametrize("path", _sources("model"), ids=lambda p: p.name)
def test_model_imports_no_gradio_or_annotator(path):
    assert not {_top(m) for m in _imports(path)} & {"gradio", "annotator"}


@pytest.mark.parametrize("path", _sources("annotator", "app.py"), ids=lambda p: p.name)
def test_annotator_and_app_reach_the_model_only_through_model_api(path):
    got = _imports(path)
    assert not {_top(m) for m in got} & {"torch", "torchvision"}
    assert {m for m in got if _top(m) == "model"} <= {"model", "model.api"}
