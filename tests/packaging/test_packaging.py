"""What a newcomer meets first: the install and test command, and the package as built.

The README's test command is the one CI runs (one install story), and the wheel carries the
library under its installed names, the LICENSE and the metadata a packaged library has.
"""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Tests"):]
    block = re.search(r"```bash\n(.*?)\n```", section, re.S)
    assert block, "README: the Tests section must open with its command in a bash block"
    return block.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = _readme_test_command()
    assert "-c .ci/constraints.txt" in command and "pytest" in command
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert command in ci, f".ci/run must run the README's test command {command!r}; it runs {ci}"
    # ... and the command at the top of the README is the same one.
    assert command in (ROOT / "README.md").read_text().split("## Tests")[0]


def test_constraints_pin_a_transformers_that_brings_the_pypi_kernels():
    pins = dict(line.split("==") for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    major, minor = (int(x) for x in pins["transformers"].split(".")[:2])
    assert (major, minor) >= (5, 25) and "kernels" in pins
    assert pins["torch"] == "2.13.0"


def test_the_wheel_ships_the_package_license_and_metadata(tmp_path):
    # Build from a copy of the tracked files, without build isolation (as a machine with no
    # network builds it), so the checkout is left as it was.
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    src = tmp_path / "src"
    for name in files.stdout.splitlines():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("minitransformer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "minitransformer/kernels/__init__.py" in names and "minitransformer/kernels/dispatch.py" in names
    assert not any(n.startswith("kernels/") for n in names), "a top-level kernels/ would shadow PyPI's"
    assert any(re.fullmatch(r"minitransformer-[^/]+\.dist-info/(licenses/)?LICENSE", n) for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Python: >=3.11" in meta
    assert "Author: The minitransformer developers" in meta or "The minitransformer developers" in meta
    assert "Classifier: License :: OSI Approved :: MIT License" in meta
    assert re.search(r"^License(-Expression)?: MIT", meta, re.M)
