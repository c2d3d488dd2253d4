"""The strict device counts device-to-host transfers, and checks of device arrays wait for one.

``strict.count_transfers`` is what the one-transfer-per-step tests (tests/train/test_transfers.py)
rest on: each way CuPy brings a value back to the host must count here, or a sync could hide.
``backend.check_later`` is how a check of device data avoids a transfer of its own.
"""
import operator
import threading

import numpy as np
import pytest

from minitransformer import backend
from minitransformer.testing.strict import StrictConversionError, count_transfers, strict, to_strict

CONVERSIONS = {
    "bool": lambda a: bool(a[0] > 0),
    "int": lambda a: int(a[1]),
    "float": lambda a: float(a[2]),
    "index": lambda a: operator.index(a.astype("int64")[1]),
    "item": lambda a: a[0].item(),
    "tolist": lambda a: a.tolist(),
    "get": lambda a: a.get(),
    "iteration": lambda a: [x for x in a],
    "repr": repr,
    "str": str,
    "format": lambda a: f"{a[0]:.3f}",
    "to_numpy": backend.to_numpy,
    "boolean mask": lambda a: a[a > 1],
    "boolean mask assignment": lambda a: a.__setitem__(a > 1, 0.0),
    "nonzero": lambda a: strict.nonzero(a > 1),
    "nonzero method": lambda a: (a > 1).nonzero(),
    "unique": strict.unique,
    "one-argument where": lambda a: strict.where(a > 1),
}


@pytest.mark.parametrize("name", sorted(CONVERSIONS))
def test_every_way_to_the_host_counts_once(name):
    a = to_strict(np.array([0.5, 2.0, 3.0]))
    with count_transfers() as transfers:
        CONVERSIONS[name](a)
    assert transfers.count == 1, transfers.report()
    assert __file__ in transfers.sites[0][1]              # it says which line asked


def test_device_work_counts_nothing():
    a = to_strict(np.arange(6.0).reshape(2, 3))
    with count_transfers() as transfers:
        b = strict.where(a > 1, a, 0.0).sum(axis=1) + strict.exp(a)[:, 0]
        a[0, 1] = b[0]
        _ = len(a), a.shape, a.dtype, a[a.argmax(axis=1)[0]]
    assert transfers.count == 0, transfers.report()


def test_numpy_is_still_refused_not_counted():
    with count_transfers() as transfers, pytest.raises(StrictConversionError):
        np.asarray(to_strict(np.ones(2)))
    assert transfers.count == 0


def test_blocks_nest_and_threads_count_their_own():
    a = to_strict(np.ones(2))
    with count_transfers() as outer:
        float(a[0])
        with count_transfers() as inner:
            float(a[1])
        worker = threading.Thread(target=lambda: float(a[0]))
        worker.start()
        worker.join()
    assert (outer.count, inner.count) == (2, 1)


def test_a_check_on_the_host_raises_at_once():
    with pytest.raises(ValueError, match="bad ids"):
        backend.check_later(np.array([1, 5]).max() > 3, lambda: "bad ids")
    backend.check_later(np.array([1, 2]).max() > 3, lambda: "bad ids")      # passes: nothing waits


def test_a_check_on_the_device_rides_on_the_next_copy():
    ids, loss = to_strict(np.array([1, 2])), to_strict(np.array([0.25, 0.5]))
    with count_transfers() as transfers:
        backend.check_later((ids > 3).any(), lambda: "bad ids")
        backend.check_later((ids < 0).any(), lambda: "negative ids")
        assert transfers.count == 0
        np.testing.assert_array_equal(backend.to_numpy(loss), [0.25, 0.5])
    assert transfers.count == 1, transfers.report()


def test_a_failed_check_on_the_device_raises_at_the_next_copy():
    ids, loss = to_strict(np.array([1, 7])), to_strict(np.array(0.5))
    backend.check_later((ids < 0).any(), lambda: "negative ids")
    backend.check_later((ids > 3).any(), lambda: f"ids {backend.to_numpy(ids).tolist()} above 3")
    with pytest.raises(ValueError, match=r"ids \[1, 7\] above 3"):
        backend.to_numpy(loss)
    assert float(backend.to_numpy(loss)) == 0.5                       # the verdict was taken: none waits


def test_checks_nobody_reads_are_read_before_they_pile_up():
    ids = to_strict(np.array([1, 2]))
    with count_transfers() as transfers:
        for _ in range(backend._MAX_PENDING + 1):
            backend.check_later((ids > 3).any(), lambda: "bad ids")
    assert transfers.count == 1 and not backend._pending_list()


def test_a_tensor_item_brings_back_the_waiting_checks_in_its_own_transfer():
    import minitransformer as mt
    import minitransformer.functional as F

    logits = mt.tensor(to_strict(np.zeros((2, 5), np.float32)), device="strict")
    loss = F.cross_entropy(logits, to_strict(np.array([1, 4])))
    with count_transfers() as transfers:
        assert loss.item() == pytest.approx(np.log(5))
    assert transfers.count == 1, transfers.report()
    loss = F.cross_entropy(logits, to_strict(np.array([1, 9])))           # 9 is outside [0, 5)
    with pytest.raises(ValueError, match=r"target ids \[9\] are outside"):
        loss.item()
    assert loss.item() == pytest.approx(np.log(5))         # the bad row was left out meanwhile
