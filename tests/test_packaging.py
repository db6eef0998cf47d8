"""The package's metadata: one version, a licence for everything shipped, classifiers, a
changelog, the schema as package data, and a README whose quick start CI runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import mmfuse

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_once():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "mmfuse.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", mmfuse.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{mmfuse.__version__}]" in changelog and "## [Unreleased]" in changelog


def test_licence_and_notices_ship():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "tokenizer.json" in licence
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in PYPROJECT["project"]["classifiers"]
    assert PYPROJECT["tool"]["setuptools"]["license-files"] == ["LICENSE"]
    # every third-party file inside the package has its notice beside it
    assets = ROOT / "src" / "mmfuse" / "encoders" / "assets"
    for folder in (p for p in assets.iterdir() if p.is_dir()):
        assert (folder / "NOTICE").exists(), folder
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    assert data["mmfuse.encoders"] == ["assets/*/*"]
    assert data["mmfuse.evaluate"] == ["*.schema.json"]


def test_classifiers_name_python_and_the_topic():
    classifiers = PYPROJECT["project"]["classifiers"]
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in classifiers)


def test_readme_opens_with_pip_and_a_quick_start_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    install = readme.index("## Install")
    assert install < readme.index("## Quick start") < readme.index("## The two commands")
    assert 'pip install "mmfuse[all]"' in readme[install:readme.index("## Quick start")]
    cli = re.search(r"<!-- quickstart-cli -->\s*```sh\n(.*?)```", readme, re.S).group(1)
    python = re.search(r"<!-- quickstart-python -->\s*```python\n(.*?)```", readme,
                       re.S).group(1)
    assert cli.strip().startswith("mmfuse run --manifest photos.csv") and "\n" not in cli.strip()
    assert len(python.strip().splitlines()) <= 8
    compile(python, "README quick start", "exec")
    check = (ROOT / "scripts" / "check_install.sh").read_text()
    assert "quickstart-cli" in check and "quickstart-python" in check
    assert "pip wheel" in check and '"$WHEEL[all]"' in check
