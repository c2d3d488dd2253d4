"""Mutation testing over a curated list of realistic bugs: do the tests catch them?

A mutant is one small, plausible bug (a wrong factor, an off-by-one, a dropped step) written
as an exact ``find`` -> ``replace`` edit of one source file, listed in ``tools/mutants.toml``
under the module it belongs to, beside the test files that cover that module. For a module
the tool

1. copies the working tree into a scratch folder (tracked and untracked, unignored files;
   ``--tests-rev REV`` takes ``tests/`` from a commit instead, to score older tests), and
   makes the copy the code that runs: the child pytest gets the copy first on ``PYTHONPATH``,
   and ``minitransformer/kernels`` is linked to the copy's ``kernels/`` so that the editable
   install's mapping of ``minitransformer.kernels`` to the original folder is never used;
2. checks that ``import minitransformer`` and ``minitransformer.kernels`` come from the copy;
3. runs the module's tests unmutated: they must pass, or no score means anything;
4. runs the module's known mutant (``known = true``, an obvious break): the tests must fail,
   or the tests do not see the code being mutated and the run stops;
5. applies every other mutant in turn, runs the tests (``-x``, stop at the first failure),
   and counts it killed when they fail; a mutant whose ``find`` text no longer occurs once
   is reported as stale, not counted.

Score = killed / (mutants - equivalent ones). Mutants marked ``equivalent = "why"`` (no test
could tell them apart from the original) are run and shown but left out of the score.

    python tools/mutate.py --list                     # modules, their tests, their mutants
    python tools/mutate.py optim checkpoint           # score these modules
    python tools/mutate.py optim --tests-rev HEAD~3   # the same mutants against older tests
    python tools/mutate.py --all --json scores.json

Not part of CI: a module takes minutes (see ``budget_s`` in the table). Run it after
changing a module or its tests, and add a mutant for every bug you fix.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tools" / "mutants.toml"


@dataclass
class Mutant:
    id: str
    file: str
    find: str
    replace: str
    why: str
    known: bool = False
    equivalent: str = ""


@dataclass
class Module:
    name: str
    tests: list
    mutants: list
    budget_s: float = 1800.0
    results: list = field(default_factory=list)


def load_table(path: Path = TABLE) -> dict:
    raw = tomllib.loads(path.read_text())
    modules = {}
    for name, spec in raw["modules"].items():
        muts = [Mutant(**m) for m in spec.get("mutants", [])]
        known = [m for m in muts if m.known]
        if len(known) != 1:
            raise SystemExit(f"{path}: module {name} must mark exactly one mutant known = true, has {len(known)}")
        modules[name] = Module(name, list(spec["tests"]), muts, float(spec.get("budget_s", 1800)))
    return modules


# ---------------------------------------------------------------------------------------
# The scratch copy
# ---------------------------------------------------------------------------------------

def make_copy(dest: Path, tests_rev: str | None) -> None:
    """Copy the working tree's files (as git sees them) into dest; optionally tests/ from a commit."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file() or rel.startswith("seed/"):
            continue
        if tests_rev and rel.startswith("tests/"):
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)
    if tests_rev:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", tests_rev, "tests"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # minitransformer.kernels must resolve inside the copy, not through the editable install
    (dest / "minitransformer" / "kernels").symlink_to(dest / "kernels", target_is_directory=True)


def child_env(copy: Path) -> dict:
    env = dict(os.environ, CI="true", PYTHONPATH=str(copy) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_imports_from(copy: Path) -> None:
    probe = "import minitransformer, minitransformer.kernels as k; print(minitransformer.__file__); print(k.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=copy, env=child_env(copy),
                         capture_output=True, text=True)
    files = out.stdout.split()
    if out.returncode or len(files) != 2 or not all(f.startswith(str(copy)) for f in files):
        raise SystemExit(f"the scratch copy is not what imports: got {files or out.stderr.strip()!r}, expected "
                         f"files under {copy}; a mutant there would change nothing")


def run_tests(copy: Path, tests: list, timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, last line of pytest's output)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    start = time.monotonic()
    try:
        out = subprocess.run(cmd, cwd=copy, env=child_env(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, f"timed out after {timeout:.0f} s"
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    summary = (failed or lines or ["(no output)"])[0 if failed else -1]
    return ("pass" if out.returncode == 0 else "fail"), time.monotonic() - start, summary[:200]


# ---------------------------------------------------------------------------------------
# One module
# ---------------------------------------------------------------------------------------

class Stale(Exception):
    pass


def apply(copy: Path, m: Mutant) -> str:
    """Apply the mutant's edits to the copy; return the file's original text."""
    path = copy / m.file
    original = text = path.read_text()
    finds, replaces = ([m.find], [m.replace]) if isinstance(m.find, str) else (m.find, m.replace)
    for find, replace in zip(finds, replaces, strict=True):
        if text.count(find) != 1:
            raise Stale(f"{m.id}: its find text occurs {text.count(find)} times in {m.file}; "
                        "update tools/mutants.toml")
        text = text.replace(find, replace)
    path.write_text(text)
    return original


def score_module(mod: Module, tests_rev: str | None, log=print) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutate-{mod.name}-") as tmp:
        copy = Path(tmp)
        make_copy(copy, tests_rev)
        check_imports_from(copy)
        tests = [t for t in mod.tests if (copy / t.split("::")[0]).exists()]
        missing = sorted(set(mod.tests) - set(tests))
        if missing:
            log(f"  [{mod.name}] not in these tests, left out: {', '.join(missing)}")
        if not tests:
            raise SystemExit(f"module {mod.name}: none of its tests exist in this tree")
        started = time.monotonic()
        verdict, base_s, summary = run_tests(copy, tests, timeout=mod.budget_s)
        if verdict != "pass":
            raise SystemExit(f"module {mod.name}: its tests fail with no mutant applied ({summary}); fix them first")
        log(f"  [{mod.name}] baseline passes in {base_s:.0f} s over {len(tests)} test files")
        limit = max(60.0, 5 * base_s)

        ordered = sorted(mod.mutants, key=lambda m: not m.known)       # the known mutant first
        results = []
        for m in ordered:
            try:
                original = apply(copy, m)
            except Stale as e:
                results.append(dict(id=m.id, verdict="stale", why=m.why, detail=str(e)))
                log(f"  [{mod.name}] STALE    {m.id}: {e}")
                continue
            try:
                verdict, secs, summary = run_tests(copy, tests, timeout=limit)
            finally:
                (copy / m.file).write_text(original)
            status = "survived" if verdict == "pass" else "killed"
            results.append(dict(id=m.id, verdict=status, why=m.why, detail=summary, seconds=round(secs, 1),
                                equivalent=m.equivalent))
            log(f"  [{mod.name}] {status.upper():8} {m.id} ({secs:.0f} s): {summary if status == 'killed' else m.why}")
            if m.known and status != "killed":
                raise SystemExit(f"module {mod.name}: the known mutant {m.id} survived; the tests do not see "
                                 f"{m.file} as the tool runs them, so no score would mean anything")
            if time.monotonic() - started > mod.budget_s:
                log(f"  [{mod.name}] over its budget of {mod.budget_s:.0f} s; the rest are not run")
                break
    scored = [r for r in results if r["verdict"] in ("killed", "survived") and not r.get("equivalent")]
    killed = sum(r["verdict"] == "killed" for r in scored)
    return dict(module=mod.name, tests_rev=tests_rev, killed=killed, scored=len(scored),
                score=round(killed / len(scored), 3) if scored else None, mutants=results,
                seconds=round(time.monotonic() - started, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help="module names from tools/mutants.toml")
    ap.add_argument("--all", action="store_true", help="every module in the table")
    ap.add_argument("--list", action="store_true", help="show modules, their tests and mutants, and stop")
    ap.add_argument("--tests-rev", help="take tests/ from this commit (score older tests against the same mutants)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    table = load_table()
    if args.list:
        for mod in table.values():
            print(f"{mod.name}: {len(mod.mutants)} mutants, budget {mod.budget_s:.0f} s")
            for t in mod.tests:
                print(f"    test  {t}")
            for m in mod.mutants:
                print(f"    {'known ' if m.known else 'mutant'} {m.id}: {m.why}")
        return 0
    names = list(table) if args.all else args.modules
    unknown = [n for n in names if n not in table]
    if not names or unknown:
        ap.error(f"name modules from {sorted(table)} (unknown: {unknown})" if unknown else "name a module or --all")
    reports = []
    for name in names:
        print(f"{name}:", flush=True)
        rep = score_module(table[name], args.tests_rev, log=lambda s: print(s, flush=True))
        reports.append(rep)
        print(f"{name}: {rep['killed']}/{rep['scored']} killed in {rep['seconds']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    survivors = [(r["module"], m["id"]) for r in reports for m in r["mutants"]
                 if m["verdict"] == "survived" and not m.get("equivalent")]
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
