"""The command line, with a signal sent to its own process at a chosen moment of its run.

    python -m tests.train.stopper SIGNAL MOMENT STEP [RANK] -- COMMAND ARGUMENTS...

runs ``minitransformer COMMAND ARGUMENTS`` and sends SIGNAL (SIGTERM, SIGINT, SIGHUP or
SIGKILL) to itself at MOMENT:

- ``after``: once the STEP-th step this process takes is done (counted over every run of
  the process, from 1), between two steps;
- ``optimizer``: inside the optimizer update of the run's step STEP, after some parameters
  were updated and before the others (where a KeyboardInterrupt used to land);
- ``save``: inside the save of the checkpoint of the run's step STEP, between its writes.

With RANK, only the data-parallel rank of that number (under mpiexec) sends it. The moment
is seeded by the test, so the run it stops is the same every time.
"""
from __future__ import annotations

import os
import signal
import sys


def arm(sig: int, moment: str, when: int) -> None:
    from minitransformer import atomic, optim, train
    from minitransformer.finetune import loop

    def send():
        os.kill(os.getpid(), sig)

    if moment == "save":
        def hook(stage, path):
            if stage == "fsync" and path.name == f"step-{when:06d}":
                send()
        atomic.fault_hook = hook
        return
    done = [0]

    def counted(step):
        def wrapper(*args, **kwargs):
            out = step(*args, **kwargs)
            done[0] += 1
            if moment == "after" and done[0] == when:
                send()
            return out
        return wrapper

    train.Trainer.train_step = counted(train.Trainer.train_step)
    loop._step = counted(loop._step)
    if moment == "optimizer":
        decay = optim.AdamW._decay
        seen = [0]

        def decay_then_signal(self, name):
            if self.step_count == when:                  # the update of step `when` is under way
                seen[0] += 1
                if seen[0] == 3:                          # two parameters updated, the rest not yet
                    send()
            return decay(self, name)
        optim.AdamW._decay = decay_then_signal


if __name__ == "__main__":
    split = sys.argv.index("--")
    head, argv = sys.argv[1:split], sys.argv[split + 1:]
    name, moment, when = head[0], head[1], int(head[2])
    rank = next((os.environ[v] for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK") if v in os.environ), "0")
    if len(head) < 4 or rank == head[3]:
        arm(getattr(signal, name), moment, when)
    from minitransformer.cli import main

    sys.exit(main(argv))
