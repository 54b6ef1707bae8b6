"""Finding the commands written in the docs and recipes: every `program ...` in Markdown code
(fenced blocks and inline spans), YAML strings, shell scripts and example lines in comments,
with the file's own shell variables expanded. Used by the tests that parse those commands with
the real argument parsers (tests/unit/test_cluster_files.py, tests/unit/test_docs.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

PLACEHOLDER = "PLACEHOLDER"  # the value of a shell variable the file does not define
OPERATORS = set("();<>|&")
PREFIXES = {"--", "exec", "then", "else", "do", "time", "nohup"}  # words after which a command starts


def is_operator(tok: str | None) -> bool:
    return bool(tok) and set(tok) <= OPERATORS


def yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [s for item in items for s in strings(item)]


# --- shell text: where the commands are, variables, tokens ---------------------------------

def comment_code(text: str) -> str:
    """Example commands in comments: lines like `#   ray up ...` (two or more spaces after #)."""
    return "\n".join(m[1] for m in re.finditer(r"(?m)^\s*#(?: {2,}|\t)(.*)$", text))


def markdown_code(text: str) -> list[str]:
    fenced = re.findall(r"(?ms)^```[^\n]*\n(.*?)^```", text)
    prose = re.sub(r"(?ms)^```.*?^```", "", text)
    return fenced + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]


def snippets(path: Path) -> list[str]:
    text = path.read_text()
    if path.suffix == ".md":
        return markdown_code(text)
    if path.suffix == ".yaml":
        return [s for doc in yaml_docs(path) for s in strings(doc)] + [comment_code(text)]
    return [text, comment_code(text)]


def expand(text: str, env: dict[str, str]) -> str:
    """Shell parameter expansion, approximately: the file's own values, else ${VAR:-default}, else PLACEHOLDER."""
    def default(m: re.Match) -> str:
        name, op, word = m[1], m[2], m[3]
        if op.endswith("+"):
            return word if name in env else ""
        return env.get(name, PLACEHOLDER if op.endswith("?") else word)

    rules = [(r"\$\(\([^()]*\)\)|\$\([^()]*\)", lambda m: PLACEHOLDER),
             (r"\$\{([A-Za-z_]\w*)(:?[-=?+])([^{}$]*)\}", default),
             (r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", lambda m: env.get(m[1] or m[2], PLACEHOLDER)),
             (r"\$\{(?:[#!]|\w+\[)[^{}$]*\}|\$[#?!$0-9-]", lambda m: PLACEHOLDER),
             (r"\$[@*]", lambda m: "")]
    previous = None
    while previous != text:
        previous = text
        for pattern, repl in rules:
            text = re.sub(pattern, repl, text)
    return text


def strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def tokens(line: str) -> list[str]:
    lexer = shlex.shlex(strip_comment(line), posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    return list(lexer)


def logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def assignments(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in logical_lines(text):
        m = re.match(r"\s*(?:export\s+|local\s+)?([A-Za-z_]\w*)=(.*)$", line)
        if m and not m[2].startswith("("):
            try:  # `A=b command` assigns the first word only
                env[m[1]] = next(iter(tokens(expand(m[2], env))), "")
            except ValueError:
                env[m[1]] = PLACEHOLDER
    return env


def commands(path: Path, program: str) -> list[list[str]]:
    """The arguments of every command `program ...` (or `.../program ...`) in the file."""
    found = []
    for chunk in snippets(path):
        env = assignments(chunk)
        for line in logical_lines(chunk):
            if program not in line:
                continue
            try:
                toks = tokens(expand(line, env))
            except ValueError as exc:  # unbalanced quotes: fatal only where the program runs
                assert not re.search(rf"(^|[\s;&|(]){program}\s", line), f"{path.name}: {exc}: {line!r}"
                continue
            wrapped = False  # inside `srun ... program ...`: program starts a command too
            for i, tok in enumerate(toks):
                before = toks[i - 1] if i else None
                wrapped = (wrapped or tok == "srun") and not is_operator(tok)
                starts = before is None or is_operator(before) or before in PREFIXES or wrapped
                if starts and (tok == program or tok.endswith("/" + program)) and i + 1 < len(toks):
                    end = next((j for j in range(i + 1, len(toks)) if is_operator(toks[j])), len(toks))
                    found.append([t for t in toks[i + 1:end] if t not in ("", "...")])
    return found


def check_distmeta_command(name: str, argv: list[str], root: Path, commands_with_config=("train",),
                           own_configs: tuple[str, ...] = ()) -> None:
    """``distmeta ARGV`` (found in file ``name``) parses with the real CLI, and for the given
    commands the config file it names exists in ``configs/`` and loads with its overrides
    (``own_configs``: files the page itself writes, which a test of that page runs)."""
    from distmeta.cli import parse_args, split_config_and_overrides
    from distmeta.config import load_config

    try:
        args = parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and argv[:1] in (["--version"], ["--help"]):
            return
        pytest.fail(f"{name}: `distmeta {shlex.join(argv)}` does not parse with distmeta.cli")
    if args.command not in commands_with_config:
        return
    path, overrides = split_config_and_overrides(args.items)
    if path is None or path in own_configs:  # --resume RUN_DIR, an elided example, the page's own file
        return
    assert re.fullmatch(r"configs/[\w.-]+\.yaml", path), f"{name}: {path!r} is not a file in configs/"
    assert (root / path).is_file(), f"{name}: {path} does not exist"
    load_config(root / path, overrides)
