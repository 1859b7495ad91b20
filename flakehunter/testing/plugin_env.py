"""A throwaway environment to install plugin packages into, offline, for tests and benchmarks.

`PluginEnv` creates a virtual environment without pip and adds a ``.pth`` file that makes the *current*
environment's packages visible in it (``site.addsitedir``, so that their own ``.pth`` files, such as an
editable flakehunter's, are processed too). Plugin packages are then installed into it with the current
environment's pip, ``--no-deps --no-build-isolation --no-index``: nothing is downloaded, and the current
environment is left untouched. Its ``bin/`` holds ``flakehunter``, ``pytest`` and ``pip`` commands, so that a
document's shell commands run in it as written::

    env = PluginEnv(tmp_path / "venv")
    env.install(package_dir)
    env.run("flakehunter", "plugins", "--json", cwd=tmp_path)
"""

from __future__ import annotations

import os
import subprocess
import sysconfig
import venv
from pathlib import Path

#: What ``pip install`` gets in the environment: offline, against the packages already visible.
OFFLINE_INSTALL = ("--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check", "-q")

_PIP = """import runpy, sys
args = sys.argv[1:]
if args[:1] == ["install"]:
    args[1:1] = {offline!r}
sys.argv = ["pip", *args]
runpy.run_module("pip", run_name="__main__")
"""
_FLAKEHUNTER = "import sys\nfrom flakehunter.cli import main\nsys.exit(main())\n"
_PYTEST = "import sys\nimport pytest\nsys.exit(pytest.console_main())\n"


class PluginEnv:
    """A virtual environment in ``folder`` that sees the current environment's packages."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt", clear=True).create(self.folder)
        self.bin = self.folder / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / ("python.exe" if os.name == "nt" else "python")
        purelib = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        parent = sysconfig.get_paths()["purelib"]
        Path(purelib, "_flakehunter_parent_env.pth").write_text(
            f"import site; site.addsitedir({parent!r})\n", encoding="utf-8"
        )
        for name, body in (("pip", _PIP.format(offline=list(OFFLINE_INSTALL))), ("flakehunter", _FLAKEHUNTER),
                           ("pytest", _PYTEST)):
            script = self.bin / name
            script.write_text(f"#!{self.python}\n{body}", encoding="utf-8")
            script.chmod(0o755)

    def environ(self) -> dict[str, str]:
        """The environment of commands run in it: its ``bin`` first on PATH, no FLAKEHUNTER_* or PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLAKEHUNTER_") and k != "PYTHONPATH"}
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(self.folder)
        env["COLUMNS"] = "200"  # rich wraps tables to the terminal width
        return env

    def run(self, *args: str, cwd: str | Path, timeout: float = 600, shell: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command (``args``, or one shell line with ``shell=True``) in the environment."""
        command: str | list[str] = args[0] if shell else list(args)
        return subprocess.run(command, cwd=cwd, shell=shell, capture_output=True, text=True, timeout=timeout,
                              env={**self.environ(), **(env or {})})

    def install(self, *packages: str | Path, cwd: str | Path | None = None) -> None:
        """``pip install -e`` each package folder (offline); RuntimeError with pip's output if it fails."""
        args = [a for p in packages for a in ("-e", str(p))]
        result = self.run(str(self.bin / "pip"), "install", *args, cwd=cwd or self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

