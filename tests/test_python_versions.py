"""vLLM 0.32 supports Python 3.11–3.14 and its CUDA images run 3.12: vsteer must install
and byte-compile on each interpreter this machine has, not only on the one CI's venv
uses. The install is `--no-deps` (the point is vsteer's own metadata and sources; the
dependency set is vLLM's and is exercised by the GPU image)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def _requires_python() -> SpecifierSet:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return SpecifierSet(meta["project"]["requires-python"])


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13", "3.14"])
def test_requires_python_admits_vllms_interpreters(version):
    assert version in _requires_python()


def test_gpu_image_installs_into_its_base_pythons_interpreter():
    text = (ROOT / "deploy/docker/Dockerfile.gpu").read_text()
    assert "python3 -m pip install" in text


def _interpreter(version: str) -> str | None:
    """A runnable python{version}: on PATH (pyenv shims only run for a selected
    version), else pyenv's own install of it."""
    found = [shutil.which(f"python{version}")]
    pyenv = Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")
    found += sorted(str(p) for p in pyenv)
    for python in filter(None, found):
        if subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0:
            return python
    return None


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_vsteer_installs_and_compiles_on(version, tmp_path):
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no python{version} on this machine")
    venv = tmp_path / "venv"
    (tmp_path / "src").mkdir()
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    src = tmp_path / "src"  # a copy: pip builds in-tree and would leave build/ here
    for name in ("pyproject.toml", "README.md", "vsteer", "server", "plugins", "kernels"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name)
    run = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(src)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    pkg = Path(site) / "vsteer"
    assert (pkg / "plugins" / "entry.py").is_file() and (pkg / "kernels").is_dir()
    run = subprocess.run([py, "-m", "compileall", "-q", str(pkg)], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    entry = subprocess.run([py, "-c", "from importlib.metadata import entry_points as e; "
                            "print([p.value for p in e(group='vllm.general_plugins')])"],
                           check=True, capture_output=True, text=True).stdout
    assert "vsteer.plugins.entry:register" in entry
