"""The docs say what the code does: every `distmeta ...` command written in README.md and
docs/ parses with the real CLI and the config it names loads with its overrides; the config
reference (docs/config.md) is the one the code generates; README stays short and its links
resolve."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from commands import check_distmeta_command, commands

from distmeta.cli import parse_args
from distmeta.config.keys import DOCS_PAGE, markdown

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HISTORY = ROOT / "docs" / "CHANGELOG.md"  # names the commands of earlier versions as they were
INVOCATIONS = [(p.relative_to(ROOT).as_posix(), argv) for p in PAGES if p != HISTORY for argv in commands(p, "distmeta")]


def test_commands_are_found_in_readme_and_docs():
    where = {name for name, _ in INVOCATIONS}
    assert {"README.md", "docs/data.md", "docs/cluster.md"} <= where
    assert {argv[0] for _, argv in INVOCATIONS} >= {"train", "eval", "config", "sweep", "data", "compare"}


@pytest.mark.parametrize(("name", "argv"), INVOCATIONS, ids=[f"{n}:{' '.join(a[:2])}" for n, a in INVOCATIONS])
def test_documented_command_parses_and_its_config_loads(name, argv):
    check_distmeta_command(name, argv, ROOT, commands_with_config=("train", "config", "sweep"),
                           own_configs=("mine.yaml",))  # README's bring-your-own, run by test_bring_your_own.py


def test_a_command_the_cli_does_not_take_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\ndistmeta train configs/sinusoid_maml.yaml --epochs 3\n```\n")
    (argv,) = commands(page, "distmeta")
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_the_config_reference_is_generated_from_the_code():
    page = ROOT / DOCS_PAGE
    assert page.is_file(), f"{DOCS_PAGE} is missing: python -m distmeta.config.keys"
    assert page.read_text() == markdown(), f"{DOCS_PAGE} is stale: python -m distmeta.config.keys"


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


IMPORT = re.compile(r"^\s*from (distmeta(?:\.\w+)*) import ([\w, ]+)$", re.M)
SOURCES = [*PAGES, *sorted(p for p in (ROOT / "cluster").iterdir() if p.is_file())]


def test_every_distmeta_import_written_in_docs_and_recipes_exists():
    found = [(p.relative_to(ROOT).as_posix(), m[1], name.strip())
             for p in SOURCES if p != HISTORY for m in IMPORT.finditer(p.read_text()) for name in m[2].split(",")]
    assert any(where.startswith("cluster/") for where, _, _ in found)
    for where, module, name in found:
        assert hasattr(importlib.import_module(module), name), f"{where}: `from {module} import {name}` fails"
