"""Build step that pyproject.toml cannot express: ship the repository's default catalog, templates, policy
pack and GitOps workflow.

They stay where the repository's users edit and review them (``presets.yaml``, ``templates/``, ``policy/``,
``.github/workflows/``); a built package carries copies under ``agentcloud/data/`` (the table in
``infra/agentcloud/data_files.py``) so that an installed ``agentcloud`` plans, renders, serves and starts new
repositories with no checkout. An editable install reads them from the checkout instead
(``agentcloud.project.shipped``).
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED: dict[str, str] = runpy.run_path(str(ROOT / "infra" / "agentcloud" / "data_files.py"))["SHIPPED"]


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "agentcloud" / "data"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for source, name in SHIPPED.items():
            into = target / name
            into.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, into)


setup(cmdclass={"build_py": BuildWithData})
