"""environment.yml and pyproject.toml must declare the same packages at the same versions."""

import re
from pathlib import Path

import tomllib

import alol_min

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    conda_reqs = []
    in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.strip() == "- pip:":
            in_pip = True
            continue
        if (
            in_pip
            and line.strip().startswith("- ")
            and not line.strip().startswith(("- --", "- -e"))
        ):
            conda_reqs.append(line.strip()[2:])
    assert {_name(r): r.replace(" ", "") for r in pip_reqs} == {
        _name(r): r.replace(" ", "") for r in conda_reqs
    }


def test_torch_is_pinned():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in text


def test_public_api_names_resolve():

    assert alol_min.load_hh_rlhf.__module__ == "alol_min.tasks.hh_rlhf"
    assert callable(alol_min.method_loss) and "a_lol" in alol_min.METHODS
