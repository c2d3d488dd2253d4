"""Sphinx configuration of the book. Build it strictly with

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

(-W: a warning fails the build; -n: every cross-reference must resolve).
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "_ext")]

project = "minitransformer: the book"
author = "the minitransformer authors"
copyright = "the minitransformer authors, MIT licence"

extensions = [
    "myst_nb",                 # MyST markdown pages and executed notebooks
    "sphinx.ext.autodoc",      # the modules' docstrings
    "sphinx.ext.viewcode",     # the highlighted source of every module, linked both ways
    "sphinx.ext.mathjax",
    "minibook",                # chapters, API pages and figures from book.py
]

exclude_patterns = ["_build", "_generated", "jupyter_execute", "README.md", "**/.ipynb_checkpoints"]
nitpicky = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# Notebooks run on every build, so they cannot rot; a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 300
nb_execution_show_tb = True

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"           # signatures as written; annotations name outside types
autodoc_inherit_docstrings = False

html_theme = "furo"
html_title = "minitransformer"
