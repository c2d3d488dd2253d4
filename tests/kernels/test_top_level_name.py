"""The repository's kernels/ folder never stands in for the PyPI package named ``kernels``.

``transformers`` (5.25 and later) depends on the PyPI distribution ``kernels`` and imports it
when a model class loads. Any process with the repository root on sys.path (pytest's rootdir
insertion, ``python -m`` or ``python -c`` started there) would find our folder first under
that name; ``kernels/__init__.py`` hands such an import over to the installed distribution,
or leaves the empty namespace package Python makes of any folder without ``__init__.py``.
Each case runs in a fresh interpreter started
in the repository root, as a user's would be.
"""
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Loads a transformers model class (the import that broke), builds a tiny model, and says
# what the name ``kernels`` resolves to in this process.
PROBE = textwrap.dedent("""
    import sys
    from transformers import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16,
                                       bos_token_id=0, eos_token_id=0))
    import minitransformer.kernels as ours
    ours.use("reference")
    import kernels
    print("kernels:", getattr(kernels, "__file__", None))
    try:
        from kernels import get_kernel
        print("get_kernel: found")
    except ImportError as e:
        print("get_kernel: absent;", e)
    print("ours:", ours.__file__)
""")


def _run(args, env=None):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)


def _pypi_kernels_installed():
    try:
        importlib.metadata.distribution("kernels")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_pypi_kernels = pytest.mark.skipif(
    not _pypi_kernels_installed(),
    reason="the PyPI package 'kernels' is not installed (transformers >= 5.25 brings it)")


@needs_pypi_kernels
def test_python_c_in_root_gets_the_installed_kernels():
    # `python -c` puts '' (the working directory, here the root) first on sys.path.
    seen = _run(["-c", PROBE])
    assert not Path(seen["kernels"]).is_relative_to(ROOT), seen   # (a venv at ROOT + "env" is not inside)
    assert seen["get_kernel"] == "found"
    assert Path(seen["ours"]).parent == ROOT / "kernels"


@needs_pypi_kernels
def test_python_m_in_root_gets_the_installed_kernels(tmp_path):
    # `python -m` puts the working directory's full path first on sys.path.
    package = ROOT / "tests" / "kernels"
    module = package / "_probe_top_level_name.py"
    module.write_text(PROBE)
    try:
        seen = _run(["-m", "tests.kernels._probe_top_level_name"])
    finally:
        module.unlink()
    assert not Path(seen["kernels"]).is_relative_to(ROOT), seen   # (a venv at ROOT + "env" is not inside)


def test_without_pypi_kernels_the_name_is_absent_and_transformers_loads(tmp_path):
    """Hide the distribution: a site folder of links to everything installed but it."""
    import site

    site_dirs = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    hidden = tmp_path / "site"
    hidden.mkdir()
    for site_dir in site_dirs:
        for entry in site_dir.iterdir():
            name = entry.name.lower()
            if name == "kernels" or name.startswith("kernels-") or (hidden / entry.name).exists():
                continue
            (hidden / entry.name).symlink_to(entry)
    # -S: no site-packages of the interpreter; the links (and .pth files: the editable
    # install's finder) come in through addsitedir, after the root ('' for -c).
    code = f"import site; site.addsitedir({str(hidden)!r})\n" + PROBE + textwrap.dedent("""
        from transformers.utils import import_utils
        print("available:", import_utils.is_kernels_available())
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    seen = _run(["-S", "-c", code], env=env)
    assert seen["kernels"] == "None", seen          # a namespace package: no file, no code
    assert seen["get_kernel"].startswith("absent"), seen
    assert seen["available"] == "False"
    assert Path(seen["ours"]).parent == ROOT / "kernels"
