"""One owner per run folder, and signals that stop a job at a step boundary."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from minitransformer import jobs


def test_a_second_owner_is_refused_naming_the_holder(tmp_path):
    with jobs.own(tmp_path / "run"):
        with pytest.raises(jobs.FolderInUse, match=rf"in use by process {os.getpid()} on host "):
            with jobs.own(tmp_path / "run"):
                pass
    with jobs.own(tmp_path / "run"):          # released on leaving: free again
        pass


HOLDER = textwrap.dedent("""
    import sys, time
    from minitransformer import jobs
    with jobs.own(sys.argv[1]):
        print("holding", flush=True)
        time.sleep(600)
""")


def test_another_process_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(jobs.FolderInUse, match=rf"process {holder.pid} on host"):
            with jobs.own(run):
                pass
    finally:
        holder.kill()                            # kill -9: no cleanup code runs
        holder.wait()
    with jobs.own(run):                          # usable at once
        assert json.loads((run / jobs.LOCK_FILE).read_text())["pid"] == os.getpid()


LOOP = textwrap.dedent("""
    import sys, time
    from minitransformer import jobs
    with jobs.StopSignals() as stop:
        print("ready", flush=True)
        step = 0
        while not stop.requested:
            step += 1                    # a step is never cut in half: the flag is read between steps
            time.sleep(0.01)
        print("stopped", stop.name, "after a whole step", flush=True)
        if len(sys.argv) > 1:
            time.sleep(600)              # a slow "save": a second signal must not wait for it
    sys.exit(stop.exit_status)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_the_first_signal_raises_the_flag_and_the_job_exits_with_the_conventional_status(sig):
    p = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(sig)
    out, _ = p.communicate(timeout=60)
    assert out.strip() == f"stopped {signal.Signals(sig).name} after a whole step"
    assert p.returncode == 128 + sig


def test_a_second_signal_ends_the_process_at_once():
    p = subprocess.Popen([sys.executable, "-c", LOOP, "slow-save"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    assert p.stdout.readline().startswith("stopped SIGTERM")
    started = time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGTERM and time.monotonic() - started < 30


def test_handlers_are_restored_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with jobs.StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) != before
        stop.request(signal.SIGINT)
        assert stop.requested and stop.exit_status == 130
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_folder_replaced_whole_keeps_its_lock_held(tmp_path):
    """A fine-tuned folder is replaced by a new version at the end of a run (atomic_folder);
    the lock file goes over as the same file, so the folder stays owned."""
    from minitransformer import atomic

    run = tmp_path / "run"
    with jobs.own(run):
        with atomic.atomic_folder(run, carry=(jobs.LOCK_FILE,)) as tmp:
            (tmp / "model").write_text("new")
        assert (run / "model").read_text() == "new"
        with pytest.raises(jobs.FolderInUse, match=f"process {os.getpid()}"):
            with jobs.own(run):
                pass
