"""Every Python snippet in README.md and docs/*.md runs, in order, one namespace per file
(pre-filled with ``np`` and ``gg``), and every ```text block right after a snippet lists lines
of what that snippet printed, so printed examples cannot drift from the code.

In a text block a line that is just ``...`` skips any number of printed lines, and ``...``
inside a line matches any text."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

import gpugraph as gg

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)

# What a page's snippets assume the reader already has (a page about streams shows how to
# check "your function"; here is one with independent branches).
SETUP = {
    "streams.md": """
def fn(x):
    return [gg.sum(gg.exp(x * k), axis=0) for k in (1.0, 2.0, 3.0, 4.0)]

x = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
""",
    "testing.md": """
args = (np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),)
compiled = gg.jit(lambda x: [gg.sum(gg.exp(x), axis=0), gg.tanh(x) * 2.0]).lower(*args)
""",
    "control-flow.md": """
x = np.linspace(0.5, 1, 8, dtype=np.float32)
k = 5
f0, f1, f2 = (lambda a: a + 1), (lambda a: a * 2), (lambda a: -a)
w = np.eye(8, dtype=np.float32) * 0.5
h0 = np.zeros(8, np.float32)
xs = np.ones((4, 8), np.float32)
""",
}


def fences(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number) of each fenced block."""
    return [(m[1].strip(), m[2], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def line_pattern(line: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in line.split("...")) + r"\Z")


def check_printed(expected: str, printed: str, where: str) -> None:
    """The expected lines appear in ``printed`` in order: each right after the previous, or
    anywhere later after a ``...`` line. The first line may come anywhere."""
    got = printed.rstrip("\n").split("\n")
    pos, skip = 0, True
    for line in expected.rstrip("\n").split("\n"):
        if line.strip() == "...":
            skip = True
            continue
        pat = line_pattern(line.rstrip())
        candidates = range(pos, len(got)) if skip else range(pos, min(pos + 1, len(got)))
        hit = next((i for i in candidates if pat.match(got[i].rstrip())), None)
        assert hit is not None, f"{where}: printed output has no line {line!r} here:\n{printed}"
        pos, skip = hit + 1, False


def pages_with_code() -> list[pathlib.Path]:
    return [p for p in PAGES if any(lang == "python" for lang, _, _ in fences(p.read_text()))]


@pytest.mark.parametrize("page", pages_with_code(), ids=lambda p: p.name)
def test_doc_snippets_run_and_print_what_they_show(page):
    ns: dict = {"np": np, "gg": gg, "__name__": "__doc_snippet__"}
    exec(SETUP.get(page.name, ""), ns)
    printed, last = "", None
    for lang, body, line in fences(page.read_text()):
        where = f"{page.name}:{line}"
        if lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body, where, "exec"), ns)
            printed, last = out.getvalue(), line
        elif lang == "text":
            assert last is not None, f"{where}: a text block with no snippet before it"
            check_printed(body, printed, where)


def test_check_printed_can_fail():
    check_printed("a\n...\nc...", "a\nb\ncde\n", "ok")
    for expected in ("a\nc", "b\na", "x", "a\n...\nd"):
        with pytest.raises(AssertionError):
            check_printed(expected, "a\nb\nc\n", "planted")
