"""Sphinx extension: the book's pages that follow from ``book.py``.

At the start of a build it
- finds every module of the library and gives each to the chapter that names it most
  specifically (``owners``), then writes one API page per chapter, ``api/<slug>.rst``, with
  the rendered docstrings of that chapter's modules (their source is linked by viewcode);
- runs every figure script once (``figures/<name>.py``: ``make(out_dir) -> facts``) and
  writes the PNGs and ``facts.json`` into ``_generated/figures``.
While reading, it puts the chapter list into the index page and ends each chapter with
links to its modules and a "where next" link. The library's docstrings are plain text with
plain-text math, meant to read well raw; they are shown as written, in a literal block.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import time
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

import book

TOP_PACKAGES = ("minitransformer", "minitransformer.kernels")   # kernels/ lives outside the package folder
INDEX_MARKER = "<!-- chapters -->"
logger = logging.getLogger(__name__)


def library_modules() -> list[str]:
    """Every importable module of the library, in walk order (``__main__`` modules excluded)."""
    names = list(TOP_PACKAGES[1:])       # the root package itself is the index page's business
    for top in TOP_PACKAGES:
        pkg = importlib.import_module(top)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".")
                  if not m.name.endswith("__main__")]
    seen = set()
    return [n for n in names if not (n in seen or seen.add(n))]


def owners(modules=None) -> dict[str, list[str]]:
    """chapter slug -> the modules it presents. A module goes to the chapter with the longest
    entry that is the module or a package above it. Raises on entries naming no module and
    on entries listed twice."""
    modules = library_modules() if modules is None else list(modules)
    entries = {}
    for ch in book.CHAPTERS:
        for entry in ch.modules:
            if entry in entries:
                raise ExtensionError(f"book.py: {entry} is listed by chapters {entries[entry]!r} and "
                                     f"{ch.slug!r}; list it once")
            entries[entry] = ch.slug
    out = {ch.slug: [] for ch in book.CHAPTERS}
    known = set(modules)
    for entry, slug in entries.items():
        if entry not in known:
            raise ExtensionError(f"book.py: chapter {slug!r} lists {entry}, which is not a module of the "
                                 "library (renamed or removed?); name its new import path")
    for m in modules:
        matches = [e for e in entries if m == e or m.startswith(e + ".")]
        if matches:
            out[entries[max(matches, key=len)]].append(m)
    return out


def unowned(modules=None) -> list[str]:
    """Library modules that no chapter presents."""
    modules = library_modules() if modules is None else list(modules)
    owned = {m for ms in owners(modules).values() for m in ms}
    return [m for m in modules if m not in owned]


# --------------------------------------------------------------------------- generated pages

def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def write_api_pages(srcdir: Path) -> None:
    missing = unowned()
    if missing:
        raise ExtensionError(f"book.py: no chapter presents {', '.join(missing)}; add each to the chapter "
                             "of its step in the reading order")
    by_chapter = owners()
    for ch in book.CHAPTERS:
        title = f"{ch.title}: the source"
        lines = [title, "=" * len(title), "",
                 f"The modules of :doc:`/chapters/{ch.slug}`, their docstrings as written. Each class "
                 "and function links to its highlighted source ([source]), and the source back to it.", ""]
        for m in by_chapter[ch.slug]:
            lines += [f"``{m}``", "-" * (len(m) + 4), "", f".. automodule:: {m}"]
            # A package's __init__ re-exports what its modules define; they document it.
            lines += ["", ""] if hasattr(importlib.import_module(m), "__path__") else ["   :members:", "", ""]
        _write_if_changed(srcdir / "api" / f"{ch.slug}.rst", "\n".join(lines))


def run_figures(srcdir: Path) -> dict:
    out_dir = srcdir / "_generated" / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = {}
    for name in book.FIGURES:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            result = importlib.import_module(f"figures.{name}").make(out_dir)
        except Exception as e:
            raise ExtensionError(f"figure script figures/{name}.py failed: {type(e).__name__}: {e}") from e
        png = out_dir / f"{name}.png"
        if not png.is_file():
            raise ExtensionError(f"figure script figures/{name}.py wrote no {png.name}")
        facts[name] = {"seconds": round(time.perf_counter() - t0, 2),
                       "cpu_seconds": round(time.process_time() - c0, 2), **(result or {})}
    (out_dir / "facts.json").write_text(json.dumps(facts, indent=1, default=str))
    return facts


def on_builder_inited(app) -> None:
    srcdir = Path(app.srcdir)
    write_api_pages(srcdir)
    facts = run_figures(srcdir)
    for name, f in facts.items():
        logger.info(f"[book] figure {name}: {f['seconds']} s ({f['cpu_seconds']} s CPU)")


# --------------------------------------------------------------------------- while reading

def _chapter_index(docname: str):
    for i, ch in enumerate(book.CHAPTERS):
        if docname == f"chapters/{ch.slug}":
            return i
    return None


def on_source_read(app, docname, source) -> None:
    if docname == "index":
        toc = ["```{toctree}", ":maxdepth: 1", ":caption: Chapters", ""]
        toc += [f"chapters/{ch.slug}" for ch in book.CHAPTERS]
        toc += ["```", "", "```{toctree}", ":maxdepth: 1", ":caption: Practice", "",
                "exercises"] + [f"notebooks/{n}" for n in book.NOTEBOOKS]
        toc += ["```", "", "```{toctree}", ":hidden:", ":caption: Source", ""]
        toc += [f"api/{ch.slug}" for ch in book.CHAPTERS] + ["```", ""]
        if INDEX_MARKER not in source[0]:
            raise ExtensionError(f"index.md must hold the marker {INDEX_MARKER} where the chapter list goes")
        source[0] = source[0].replace(INDEX_MARKER, "\n".join(toc))
        return
    i = _chapter_index(docname)
    if i is None:
        return
    ch = book.CHAPTERS[i]
    mods = owners()[ch.slug]
    tail = ["", "## Read the source", "",
            f"The rendered docstrings of this chapter: {{doc}}`/api/{ch.slug}`. Its modules:", ""]
    tail += [f"- {{py:mod}}`{m}`" for m in mods]
    nxt = (f"{{doc}}`/chapters/{book.CHAPTERS[i + 1].slug}`" if i + 1 < len(book.CHAPTERS)
           else "{doc}`/exercises`, where the tests grade what you rebuild")
    tail += ["", "## Where next", "", f"Next: {nxt}.", ""]
    source[0] = source[0].rstrip() + "\n" + "\n".join(tail)


def on_process_docstring(app, what, name, obj, options, lines) -> None:
    """Show a docstring as written: a literal block keeps its plain-text math and layout."""
    if lines and any(line.strip() for line in lines):
        lines[:] = ["::", ""] + [("    " + line) if line else "" for line in lines] + [""]


def setup(app):
    app.connect("builder-inited", on_builder_inited)
    app.connect("source-read", on_source_read)
    app.connect("autodoc-process-docstring", on_process_docstring)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
