"""Data parallelism: K ranks under mpiexec train exactly what one process trains.

The MPI runs happen in subprocesses (``mpiexec -n 2 python -m tests.dist.worker ...``);
their results are compared here with one-process runs of the same ``worker.build``.

Tolerances: float64 runs agree to 1e-10 (absolute, on every weight and Adam moment).
float32 runs agree to 2e-4: the ranks sum the same terms in another order, float32
rounds each sum to ~1e-7 relative, and Adam's m / sqrt(v) magnifies that on weights whose
gradient is near zero; an Adam step moves a weight by about lr = 1e-2 at most, so 2e-4 is
a 2% disagreement of one step (over six steps) where any real bug, e.g. a wrong
normalisation or a missing bucket, moves weights by whole steps.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import checkpoint, dist
from minitransformer.models import count_targets
from tests.dist import worker

ROOT = Path(__file__).resolve().parents[2]
_beside_python = Path(sys.executable).parent / "mpiexec"
MPIEXEC = str(_beside_python) if _beside_python.is_file() else shutil.which("mpiexec")
HAVE_MPI = MPIEXEC is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpiexec and mpi4py (pip install -e '.[dist]')")

F64_ATOL = 1e-10
F32_ATOL = 2e-4


def launch(n: int, args, timeout: float, cache: Path) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n python ARGS`` from the repository root; kill the whole job on timeout."""
    env = {k: v for k, v in os.environ.items() if k not in dist.THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["MINITRANSFORMER_CACHE"] = str(cache)
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec did not finish within {timeout} s (a hang):\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def load(path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(np.asarray(a[k], dtype=np.float64) - np.asarray(b[k], dtype=np.float64))))
               for k in a)


# ---------------------------------------------------------------------------------------
# One MPI launch for the equivalence and resume runs; one-process references beside it
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not HAVE_MPI:
        pytest.skip("needs mpiexec and mpi4py (pip install -e '.[dist]')")
    folder = tmp_path_factory.mktemp("dp")
    # One process starts the run that two ranks will finish.
    worker.build(folder / "from-1", micro=2).fit(until=worker.RESUME_AT)
    res = launch(2, ["-m", "tests.dist.worker", "equivalence", str(folder)], 240, folder / "cache")
    assert res.returncode == 0, res.stderr
    info = [json.loads((folder / f"info-rank{r}.json").read_text()) for r in range(2)]
    return folder, info


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, whole global batch: weights and optimizer state of every case."""
    folder = tmp_path_factory.mktemp("one")
    out = {}
    for name, (dtype, micro, _) in worker.CASES.items():
        t = worker.build(folder / name, dtype, micro)
        t.fit()
        out[name] = (worker.weights(t), {k: np.asarray(v) for k, v in t.optimizer.state_dict().items()})
    return out


@needs_mpi
def test_ranks_split_each_global_batch_and_hold_different_token_counts(two_ranks):
    folder, info = two_ranks
    assert [i["size"] for i in info] == [2, 2]
    assert [tuple(i["rows"]) for i in info] == [(0, 4), (4, 8)]
    data = worker.build(folder / "probe-check").train_data
    whole = [count_targets(data.batch(s, worker.BATCH)) for s in range(worker.STEPS)]
    assert [a + b for a, b in zip(info[0]["targets"], info[1]["targets"])] == whole
    assert info[0]["targets"] != info[1]["targets"]      # the normalisation is really exercised
    # one (bucketed) gradient all-reduce per step, in every case and resume run
    steps = len(worker.CASES) * worker.STEPS + worker.RESUME_AT + (worker.STEPS - worker.RESUME_AT)
    assert info[0]["grad_allreduce"]["calls"] == steps


@needs_mpi
@pytest.mark.parametrize("case", list(worker.CASES))
def test_two_ranks_reach_the_weights_of_one_process(two_ranks, reference, case):
    folder, info = two_ranks
    atol = F64_ATOL if worker.CASES[case][0] == "float64" else F32_ATOL
    ranks = [load(folder / f"{case}-rank{r}.npz") for r in range(2)]
    for k in ranks[0]:                                   # the replicas are identical, bit for bit
        assert np.array_equal(ranks[0][k], ranks[1][k]), k
    want_weights, want_state = reference[case]
    assert max_diff(ranks[0], want_weights) <= atol
    state = load(folder / f"{case}-optimizer.npz")     # ZeRO-1: gathered from both ranks
    assert int(state["step_count"]) == int(want_state["step_count"]) == worker.STEPS
    assert max_diff(state, want_state) <= atol
    assert info[0]["cases"][case]["optimizer"] == ("ZeroOptimizer" if worker.CASES[case][2] else "AdamW")


@needs_mpi
def test_zero1_keeps_half_the_optimizer_state_on_each_of_two_ranks(two_ranks, reference):
    _, info = two_ranks
    for case in ("f64-zero1", "f32-zero1"):
        full = sum(v.nbytes for k, v in reference[case][1].items() if k != "step_count")
        held = [i["cases"][case]["state_bytes"] for i in info]
        assert sum(held) == full
        assert max(held) <= -(-full // 2) + 16           # half, up to rounding of the split
        assert info[1]["cases"][case]["state_dict_off_root"] == "refused"


@needs_mpi
def test_resume_across_rank_counts(two_ranks, reference, tmp_path):
    folder, info = two_ranks
    want = reference["f64"][0]
    # two ranks (ZeRO-1) trained steps 0..2 and saved; one process finishes the run
    ckpt = checkpoint.resolve(folder / "from-k")
    assert checkpoint.verify(ckpt)["step"] == worker.RESUME_AT
    shutil.copytree(folder / "from-k", tmp_path / "from-k")
    t = worker.build(tmp_path / "from-k", micro=0)
    assert t.resume() and t.step == worker.RESUME_AT
    t.fit()
    assert max_diff(worker.weights(t), want) <= F64_ATOL
    # one process trained steps 0..2; two ranks finished the run
    assert info[0]["resumed_from_1_at"] == worker.RESUME_AT
    assert max_diff(load(folder / "from-1-rank0.npz"), want) <= F64_ATOL


@needs_mpi
def test_each_rank_gets_its_share_of_blas_threads(two_ranks):
    _, info = two_ranks
    if info[0]["local_size"] != 2:
        pytest.skip("the two ranks run on different machines")
    expected = max(1, dist.available_cores() // 2)
    for i in info:
        assert i["blas_threads"], "no OpenBLAS found loaded; NumPy should bring one"
        assert set(i["blas_threads"].values()) == {expected}


@needs_mpi
def test_a_stalled_rank_stops_the_others_with_its_name(tmp_path):
    # the stalled rank sleeps 600 s; the job must end long before (launch fails on a hang)
    res = launch(2, ["-m", "tests.dist.worker", "stall", str(tmp_path)], 120, tmp_path / "cache")
    assert res.returncode != 0
    assert f"rank 1 of 2 did not reach the target-count all-reduce within {worker.STALL_TIMEOUT:g} s" in res.stderr
    assert "no timeout happened" not in res.stderr
    ckpt = checkpoint.resolve(tmp_path / "run")
    state = checkpoint.verify(ckpt)                      # complete, checksums match
    assert state["step"] == worker.STALL_STEP - 1       # saved every 2 steps; step 5 never ended
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


@needs_mpi
def test_an_exception_on_one_rank_ends_the_job_at_once(tmp_path):
    # the timeout is 600 s: only the abort on an uncaught exception ends this before launch's guard
    res = launch(2, ["-m", "tests.dist.worker", "crash", str(tmp_path)], 120, tmp_path / "cache")
    assert res.returncode != 0
    assert "RuntimeError: rank 1 breaks inside step 2" in res.stderr


@needs_mpi
def test_ranks_in_different_collectives_are_told_so(tmp_path):
    res = launch(2, ["-m", "tests.dist.worker", "astray", str(tmp_path)], 120, tmp_path / "cache")
    assert res.returncode != 0
    assert "is at collective #1, a barrier, but rank 0 at #1, the target-count all-reduce" in res.stderr \
        or "is at collective #1, the target-count all-reduce, but rank 1 at #1, a barrier" in res.stderr


# ---------------------------------------------------------------------------------------
# The command line under mpiexec
# ---------------------------------------------------------------------------------------

def _write_corpus(folder: Path) -> Path:
    import inspect

    docs = folder / "docs"
    docs.mkdir()
    names = sorted(n for n in dir(os.path) if not n.startswith("_"))
    for i in range(6):
        text = "\n".join(inspect.getdoc(getattr(os.path, n)) or n for n in names[i::6])
        (docs / f"d{i}.txt").write_text(text * 3)
    return docs


@needs_mpi
def test_pretrain_under_mpiexec_matches_one_process(tmp_path, monkeypatch):
    from minitransformer.cli import main

    docs = _write_corpus(tmp_path)
    args = ["pretrain", "--data", str(docs), "--vocab-size", "400", "--block-size", "16", "--batch-size", "4",
            "--steps", "3", "--eval-every", "0", "--save-every", "0", "--no-progress", "--zero1"]
    res = launch(2, ["-m", "minitransformer", *args, "--out", str(tmp_path / "two")], 240, tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("preparing data") == 1 and res.stdout.count("done in") == 1   # rank 0 only
    assert "data-parallel over 2 ranks (2 sequences each), ZeRO-1" in res.stdout
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x).get("step") for x in lines] == [1, 2, 3, 3]

    for var in dist.LAUNCHER_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MINITRANSFORMER_CACHE", str(tmp_path / "cache"))
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two = checkpoint.load_arrays(checkpoint.resolve(tmp_path / "two") / "model.safetensors")
    one = checkpoint.load_arrays(checkpoint.resolve(tmp_path / "one") / "model.safetensors")
    assert max_diff(two, one) <= F32_ATOL


# ---------------------------------------------------------------------------------------
# Without MPI
# ---------------------------------------------------------------------------------------

def test_split_rows_covers_the_batch_once_in_near_equal_slices():
    for size in range(1, 9):
        for batch in range(size, 41):
            slices = [dist.split_rows(batch, size, r) for r in range(size)]
            assert slices[0][0] == 0 and slices[-1][1] == batch
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
            lengths = [hi - lo for lo, hi in slices]
            assert max(lengths) - min(lengths) <= 1
    with pytest.raises(ValueError, match="batch of 3 sequences cannot be split over 4 ranks"):
        dist.split_rows(3, 4, 0)


def test_launcher_detection():
    assert not dist.launched_under_mpi({"HOME": "/x"})
    assert dist.launched_under_mpi({"PMI_RANK": "0"})
    assert dist.launched_under_mpi({"OMPI_COMM_WORLD_SIZE": "2"})


def test_single_process_fallback_trains_exactly_as_without_a_communicator(tmp_path, monkeypatch):
    for var in dist.LAUNCHER_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    comm = dist.init(zero1=True)
    assert isinstance(comm, dist.SingleProcess) and not comm.distributed and comm.size == 1
    a = worker.build(tmp_path / "a", micro=2, steps=3, comm=comm)
    b = worker.build(tmp_path / "b", micro=2, steps=3)
    a.fit()
    b.fit()
    wa, wb = worker.weights(a), worker.weights(b)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_importing_the_package_does_not_import_mpi4py():
    code = ("import sys, minitransformer, minitransformer.dist, minitransformer.train, "
            "minitransformer.cli.pretrain; assert 'mpi4py' not in sys.modules, 'mpi4py was imported'")
    env = {k: v for k, v in os.environ.items() if k not in dist.LAUNCHER_VARIABLES}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_zero1_refuses_mixed_dtypes_and_unknown_optimizers():
    from minitransformer import models, optim

    model = models.build(models.GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    model.parameters()[0].data = model.parameters()[0].data.astype("float64")
    fake = type("OneRank", (), {"rank": 0, "size": 1})()
    with pytest.raises(ValueError, match="one dtype, got float32, float64"):
        dist.ZeroOptimizer(optim.AdamW(model), fake)

    class Other(optim.SGD):
        pass

    with pytest.raises(TypeError, match="AdamW or SGD"):
        dist.ZeroOptimizer(Other(model), fake)


def test_zero1_over_the_single_process_communicator_is_the_plain_optimizer():
    """SingleProcess answers every collective ZeRO-1 makes (the all-gather of the updated
    slices, the gather of the state), so a sharded optimizer over it is the unsharded one."""
    from minitransformer import models, optim

    cfg = models.GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    runs = []
    for sharded in (False, True):
        mt.manual_seed(0)
        model = models.build(cfg).astype("float64")
        opt = optim.AdamW(model, lr=1e-2, weight_decay=0.1, no_decay=optim.no_decay_names(model))
        if sharded:
            opt = dist.ZeroOptimizer(opt, dist.SingleProcess())
        rng = np.random.default_rng(1)
        for _ in range(3):
            for _, p in model.named_parameters():
                p.grad = rng.standard_normal(p.data.shape)
            opt.step()
        if sharded:
            opt.gather_state()
        runs.append(({k: v.copy() for k, v in model.state_dict().items()}, opt.state_dict()))
    (w_plain, s_plain), (w_zero, s_zero) = runs
    assert max_diff(w_plain, w_zero) == 0.0
    assert max_diff(s_plain, s_zero) == 0.0


def test_blas_threads_are_set_for_every_loaded_blas():
    before = dist.blas_threads()
    assert before, "no BLAS found loaded; NumPy should bring one"
    try:
        assert set(dist.set_blas_threads(1).values()) == {1}
        assert set(dist.blas_threads().values()) == {1}
    finally:
        dist.set_blas_threads(max(before.values()))
    assert dist.blas_threads() == before
    with pytest.raises(ValueError, match="positive integer, got 0"):
        dist.set_blas_threads(0)


# ---------------------------------------------------------------------------------------
# GPU: NCCL with one rank (more GPUs: the same code, one per rank)
# ---------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_mpi
def test_nccl_one_rank_matches_one_process_on_the_gpu(tmp_path):
    res = launch(1, ["-m", "tests.dist.worker", "nccl", str(tmp_path)], 300, tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "info-rank0.json").read_text())
    assert info["nccl"] is True
    for name in ("cuda", "cuda-zero1"):
        t = worker.build(tmp_path / f"one-{name}", micro=2, device="cuda")
        t.fit()
        assert max_diff(load(tmp_path / f"{name}-rank0.npz"), worker.weights(t)) <= F64_ATOL
