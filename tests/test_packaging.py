"""The package as a user installs it: the `cacim` console script, plugins found through the `cacim.plugins`
entry-point group (no --plugin), and the licence files that must travel with pcm.py's transcription."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _installed_package(site: Path, name: str, body: str) -> None:
    """A package as pip leaves it in site-packages: the module and a dist-info with entry_points.txt."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(textwrap.dedent(body))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cacim.plugins]\nquantizers = {name}\n")


def _cli(*args: str, site: Path | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site) if site else ""}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.slow  # starts a Python that imports torch
def test_installed_plugin_is_found_without_plugin_flag(tmp_path):
    site = tmp_path / "site"
    _installed_package(
        site,
        "cacim_ep_demo",
        """
        import torch
        from cacim_core import quantizers

        @quantizers.register("ep_demo")
        class EpDemo(quantizers.Quantizer):
            def fit(self, w):
                m = w.detach().abs().max()
                self.set_levels(torch.linspace(-1.0, 1.0, self.num_levels, dtype=w.dtype) * m)
        """,
    )
    args = ("list", "table1", "--scale", "smoke", "--methods", "ep_demo", "--results", str(tmp_path / "r"))
    without = _cli(*args, cwd=tmp_path)
    assert without.returncode == 2 and "unknown method(s) ep_demo" in without.stderr
    found = _cli(*args, site=site, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines and all("ep_demo" in line and line.startswith("todo") for line in lines)


@pytest.mark.slow  # starts a Python that imports torch
def test_a_broken_installed_plugin_is_one_line_naming_the_package(tmp_path):
    site = tmp_path / "site"
    _installed_package(site, "cacim_ep_broken", "raise RuntimeError('boom at import')\n")
    out = _cli("list", "table1", "--scale", "smoke", site=site, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "cacim-ep-broken" in out.stderr and "boom at import" in out.stderr and "uninstall" in out.stderr


@pytest.mark.slow  # starts a Python that imports torch
def test_cacim_console_script_runs_the_cli(tmp_path):
    script = Path(sys.executable).with_name("cacim")
    assert script.is_file(), f"no {script}: reinstall the package (make core) to get the console script"
    out = subprocess.run(
        [str(script), "list", "table1", "--scale", "smoke", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    same = _cli("list", "table1", "--scale", "smoke", "--results", str(tmp_path), cwd=tmp_path)
    assert out.stdout == same.stdout and out.stdout.startswith("todo  resnet20-")


@pytest.mark.parametrize("name", ["LICENSE", "NOTICE"])
def test_licence_files_credit_aihwkit(name):
    text = (ROOT / name).read_text()
    assert "Apache License" in text
    if name == "NOTICE":
        assert "aihwkit" in text and "cacim_core/pcm.py" in text
