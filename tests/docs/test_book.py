"""The book builds strictly, its figures say what the library does, its exercises point at real tests.

One strict build per test session (``python -m sphinx -W --keep-going -n``: any warning,
unresolved cross-reference, failing figure script or failing notebook cell fails it). The
figure scripts run once, inside that build; each figure's test then checks the facts its
script returned against what the library is known to do.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path[:0] = [str(DOCS), str(DOCS / "_ext")]

import book  # noqa: E402
import minibook  # noqa: E402


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(html folder, figure facts) of one strict build."""
    out = tmp_path_factory.mktemp("book")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"the strict book build failed:\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
    facts = json.loads((DOCS / "_generated" / "figures" / "facts.json").read_text())
    return out / "html", facts


def test_every_page_is_built(built):
    html, _ = built
    for ch in book.CHAPTERS:
        page = (html / "chapters" / f"{ch.slug}.html").read_text()
        assert "Where next" in page, ch.slug
        assert (html / "api" / f"{ch.slug}.html").is_file(), ch.slug
    for nb in book.NOTEBOOKS:
        assert (html / "notebooks" / f"{nb}.html").is_file(), nb
    assert (html / "exercises.html").is_file()
    # The kernels live outside the package folder: their API page must still show them.
    kernels = (html / "api" / "kernels.html").read_text()
    assert "minitransformer.kernels.attention" in kernels and "tile_schedule" in kernels
    assert (html / "_modules" / "minitransformer" / "kernels" / "attention.html").is_file()


def test_notebooks_ran(built):
    html, _ = built
    gradcheck = (html / "notebooks" / "gradcheck.html").read_text()
    assert "caught:" in gradcheck                 # the wrong backward was caught, in the executed output
    attention = (html / "notebooks" / "attention.html").read_text()
    assert "mean row entropy" in attention


def test_every_module_belongs_to_one_chapter():
    assert minibook.unowned() == []
    owned = [m for mods in minibook.owners().values() for m in mods]
    assert len(owned) == len(set(owned))


def test_a_renamed_or_new_module_is_named():
    modules = minibook.library_modules()
    # A chapter entry that no longer exists (a module renamed without updating book.py).
    with pytest.raises(Exception, match="minitransformer.dist"):
        minibook.owners([m for m in modules if m != "minitransformer.dist"])
    # A new module that no chapter presents.
    assert minibook.unowned(modules + ["minitransformer.tokenizers2"]) == ["minitransformer.tokenizers2"]
    # A module that moves into a package keeps its chapter: the package entry covers it.
    moved = [m for m in modules if m != "minitransformer.scaling"] + ["minitransformer.scaling",
                                                                      "minitransformer.scaling.fit"]
    assert "minitransformer.scaling.fit" in minibook.owners(moved)["scaling"]


# --------------------------------------------------------------------------- figures

def test_every_figure_was_made(built):
    html, facts = built
    assert sorted(facts) == sorted(book.FIGURES)
    for name in book.FIGURES:
        assert (html / "_images" / f"{name}.png").stat().st_size > 10_000, name


def test_figure_graph(built):
    f = built[1]["graph"]
    a, b, c, fv = (f["values"][k] for k in "abcf")
    assert f["values"]["L"] == (a * b + c) * fv
    assert f["grads"] == {"a": fv * b, "b": fv * a, "c": fv, "f": a * b + c, "e": fv, "d": fv, "L": 1.0}


def test_figure_objectives(built):
    f = built[1]["objectives"]
    shares = f["mlm_shares"]          # over 4,000 rows of ~19 tokens: several thousand selections
    assert abs(shares["selected"] - 0.15) < 0.01
    assert abs(shares["mask"] - 0.8) < 0.03
    assert abs(shares["random"] - 0.1) < 0.02 and abs(shares["kept"] - 0.1) < 0.02
    assert f["span_roundtrip"] is True and f["span_sentinels"] >= 1


def test_figure_masks(built):
    from figures import masks

    f = built[1]["masks"]["allowed"]
    causal = lambda t, n: sum(min(i + 1, n) for i in range(t))          # noqa: E731
    assert f["GPT: causal + padding"] == sum(causal(masks.T_ENC, n) for n in masks.LENGTHS)
    assert f["BERT, T5 encoder: padding only"] == masks.T_ENC * sum(masks.LENGTHS)
    assert f["T5 decoder self: causal + padding"] == sum(causal(masks.T_DEC, n) for n in masks.DEC_LENGTHS)
    assert f["T5 cross: decoder -> encoder padding"] == masks.T_DEC * sum(masks.LENGTHS)
    assert built[1]["masks"]["buckets_encoder"] <= masks.NUM_BUCKETS


def test_figure_bpe(built):
    from figures import _common

    f = built[1]["bpe"]
    assert f["tokens"][0] == len(_common.sentence().encode("utf-8"))    # no merges: one token a byte
    assert all(a >= b for a, b in zip(f["tokens"], f["tokens"][1:]))
    assert f["tokens"][-1] < f["tokens"][0]


def test_figure_flash_tiles(built):
    f = built[1]["flash_tiles"]
    n = f["1024x1024"]["tiles"][0]
    assert f["1024x1024"]["skipped"] == n * (n - 1) // 2
    assert f["1024x1024"]["masked"] == n
    assert sum(f["256x1024"][k] for k in ("skipped", "full", "masked")) == math.prod(f["256x1024"]["tiles"])


def test_figure_loss_curve(built):
    f = built[1]["loss_curve"]
    for name, run in f["runs"].items():
        assert abs(run["first"] - f["uniform"]) < 0.5, name        # starts near a uniform guess
        assert run["last"] < run["first"] - 0.5, name              # and learns


def test_figure_curation(built):
    f = built[1]["curation"]
    assert 0 < f["docs_out"] < f["docs_in"]
    assert f["dropped"]["exact_dedup"] == f["planted"]["exact_copies"]
    assert f["dropped"]["minhash"] >= 1


def test_figure_scaling(built):
    f = built[1]["scaling"]
    assert len(f["points"]) == len({n for n, _ in f["points"]}) >= 3
    assert all(math.isfinite(f["fit"][k]) for k in ("E", "A", "alpha")) and f["fit"]["alpha"] > 0


# --------------------------------------------------------------------------- exercises

def exercise_commands():
    """Each exercise's test command, as (test files, -k expression or None)."""
    text = (DOCS / "exercises.md").read_text()
    out = []
    for line in re.findall(r"^CI=true pytest (.+)$", text, flags=re.M):
        k = re.search(r"-k (\"[^\"]+\"|'[^']+'|\S+)", line)
        files = line[:k.start()].split() if k else line.split()
        out.append((files, k.group(1).strip("\"'") if k else None))
    return out


def _matches(expression, node_id):
    """pytest's -k for plain words joined by and / or / not, matched against one node id."""
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression)
    py = expression
    for w in sorted(set(words) - {"and", "or", "not"}, key=len, reverse=True):
        py = re.sub(rf"\b{w}\b", repr(w.lower() in node_id.lower()), py)
    return eval(py)                                                       # noqa: S307 (our own file)


def test_exercises_grade_with_tests_that_exist():
    commands = exercise_commands()
    assert len(commands) >= 10
    files = sorted({f for fs, _ in commands for f in fs})
    for f in files:
        assert (ROOT / f).is_file(), f"exercises.md names {f}, which does not exist"
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    nodes = [line for line in r.stdout.splitlines() if "::" in line]
    for fs, k in commands:
        selected = [n for n in nodes if n.split("::")[0] in fs and (k is None or _matches(k, n))]
        assert selected, f"exercise command 'pytest {' '.join(fs)} -k {k!r}' selects no test"


def test_notebooks_are_jupytext_sources():
    jupytext = pytest.importorskip("jupytext")
    for nb in book.NOTEBOOKS:
        notebook = jupytext.read(DOCS / "notebooks" / f"{nb}.md")
        assert notebook.metadata["kernelspec"]["name"] == "python3"
        assert sum(c.cell_type == "code" for c in notebook.cells) >= 3, nb
