"""Run the snippets of the learning path (docs/learn/*.md), so the pages cannot rot.

Each page is read top to bottom. Every ```python block runs, in order, in one namespace
per page (a page is one session, starting with NumPy's default print options). A ```text
block that follows a python block (nothing but blank lines between) is that block's
expected standard output, compared token by token with what it printed (whitespace is
not significant):

* tokens are equal as text, except
* a number in scientific notation below 1e-3 in the page (``3.1e-13``: a round-off
  measurement, which depends on the BLAS and the CPU) matches any printed number at most
  100 times it (at most 1e-14 where the page shows 0). The page shows the value measured
  when it was written; another machine must come out no worse than that.

A text block marked ```` ```text machine-dependent ```` is shown, not compared (output that
another CPU's rounding may change in more than its digits); its snippet should assert
what must hold everywhere.

A block that uses TensorFlow (it mentions ``tensorflow`` or ``tfnet``) is skipped when
TensorFlow is not installed, and so is the rest of its page, which may use its names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

LEARN = Path(__file__).resolve().parents[1] / "docs" / "learn"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
ROUNDOFF = re.compile(r"^[-+]?\d+(\.\d*)?e[-+]?\d+$")
HAS_TF = importlib.util.find_spec("tensorflow") is not None


@dataclass
class Block:
    page: str
    index: int      # 1-based, among the page's python blocks
    line: int       # line of the opening fence
    source: str
    expected: str | None

    @property
    def needs_tf(self) -> bool:
        return "tensorflow" in self.source or "tfnet" in self.source


def parse(path: Path) -> list[Block]:
    """The python blocks of a page, each with the text block that follows it (if any)."""
    text = path.read_text()
    blocks: list[Block] = []
    prev_end = None
    for m in FENCE.finditer(text):
        lang, info, body = m.group(1), m.group(2), m.group(3)
        if lang == "python":
            blocks.append(Block(path.name, len(blocks) + 1, text.count("\n", 0, m.start()) + 1, body, None))
        elif lang == "text" and blocks and prev_end is not None and blocks[-1].expected is None \
                and not text[prev_end:m.start()].strip():
            blocks[-1].expected = None if "machine-dependent" in info else body
        prev_end = m.end() if lang == "python" else None
    return blocks


def tokens_match(want: str, got: str) -> bool:
    if want == got:
        return True
    want_core, got_core = want.rstrip(",;:"), got.rstrip(",;:")  # "3.2e-07," in a sentence of output
    if want[len(want_core):] != got[len(got_core):]:
        return False
    if ROUNDOFF.match(want_core):
        try:
            w, g = float(want_core), float(got_core)
        except ValueError:
            return False
        return abs(w) < 1e-3 and abs(g) <= 100 * max(abs(w), 1e-16)
    return False


def output_mismatch(want: str, got: str) -> str | None:
    """None if ``got`` matches ``want`` (rules in the module docstring), else a report."""
    w_lines = [l.split() for l in want.strip().splitlines() if l.strip()]
    g_lines = [l.split() for l in got.strip().splitlines() if l.strip()]
    ok = len(w_lines) == len(g_lines) and all(
        len(w) == len(g) and all(tokens_match(a, b) for a, b in zip(w, g)) for w, g in zip(w_lines, g_lines))
    return None if ok else f"--- the page shows:\n{want}\n--- the snippet printed:\n{got}"


PAGES = sorted(LEARN.glob("[0-9][0-9]-*.md"))
BLOCKS = [b for p in PAGES for b in parse(p)]
_namespaces: dict[str, dict] = {}
_skipped_pages: set[str] = set()
_print_options: dict[str, dict] = {}   # each page's NumPy print options (they are global state)
_DEFAULT_PRINT_OPTIONS = np.get_printoptions()


def test_pages_exist_and_have_snippets():
    assert PAGES, f"no pages in {LEARN}"
    for p in PAGES:
        assert any(b.page == p.name for b in BLOCKS), f"{p.name} has no python snippet"


def test_index_lists_every_page_in_order():
    index = (LEARN / "README.md").read_text()
    positions = [index.find(f"({p.name})") for p in PAGES]
    assert all(k >= 0 for k in positions), f"docs/learn/README.md misses {[p.name for p, k in zip(PAGES, positions) if k < 0]}"
    assert positions == sorted(positions), "docs/learn/README.md lists the pages out of order"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.index}" for b in BLOCKS])
def test_snippet(block: Block):
    if block.page in _skipped_pages:
        pytest.skip("an earlier block of this page needs TensorFlow, which is not installed")
    if block.needs_tf and not HAS_TF:
        _skipped_pages.add(block.page)
        pytest.skip("TensorFlow is not installed")
    namespace = _namespaces.setdefault(block.page, {"__name__": f"learn_{block.page[:2]}"})
    out = io.StringIO()
    code = compile(block.source, f"docs/learn/{block.page} (block {block.index}, line {block.line})", "exec")
    outside = np.get_printoptions()
    np.set_printoptions(**_print_options.get(block.page, _DEFAULT_PRINT_OPTIONS))
    try:
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
    finally:
        _print_options[block.page] = np.get_printoptions()
        np.set_printoptions(**outside)
    if block.expected is not None:
        mismatch = output_mismatch(block.expected, out.getvalue())
        assert mismatch is None, mismatch


def test_roundoff_tokens():
    assert tokens_match("3.1e-13", "2.0e-12") and tokens_match("3.1e-13", "0.0e+00")
    assert tokens_match("0.0e+00", "5.5e-17") and not tokens_match("0.0e+00", "1.0e-13")
    assert not tokens_match("3.1e-13", "1.0e-10") and not tokens_match("0.5", "0.50")
    assert not tokens_match("2.5e+00", "2.4e+00")
    assert tokens_match("3.2e-07,", "3.6e-07,") and not tokens_match("3.2e-07,", "3.6e-07")
    assert output_mismatch("a  1.0e-12\nok", "a 5.0e-11 \n ok\n") is None
    assert output_mismatch("a 1", "a 1\nb") is not None


LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(#[^)]*)?\)")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@pytest.mark.parametrize("page", PAGES + [LEARN / "README.md"], ids=lambda p: p.name)
def test_links_resolve(page: Path):
    missing = [target for target, _ in LINK.findall(page.read_text())
               if "://" not in target and not (page.parent / target).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_functions_exist(page: Path):
    """The "Code:" paragraph names functions, then the file they are in (no line anchors,
    which rot): each name must still be defined in the file linked after it."""
    text = page.read_text()
    start = text.index("\nCode:")
    paragraph = text[start:text.index("\n\n", start)]
    pos, missing = 0, []
    for m in LINK.finditer(paragraph):
        source = (page.parent / m.group(1)).resolve()
        if source.suffix == ".py":
            code = source.read_text()
            for name in re.findall(r"`([^`]+)`", re.sub(r"\[[^\]]*\]", "", paragraph[pos:m.start()])):
                if IDENT.match(name):
                    last = name.split(".")[-1]
                    if not re.search(rf"^\s*(def|class) {last}\b|^{last} = ", code, re.M):
                        missing.append(f"{name} in {m.group(1)}")
        pos = m.end()
    assert not missing, f"{page.name} names what its files no longer define: {missing}"
