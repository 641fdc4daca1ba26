"""Hardware targets: validated definitions, refused with one line when wrong or unavailable here."""

import os

import pytest
import torch

from modsearch import UserError
from modsearch.cost import FINGERPRINT_KEYS, HardwareTarget, fingerprint, fingerprint_mismatch


def test_shipped_targets_resolve_by_name():
    t = HardwareTarget.resolve("cpu-1t-b1")
    assert (t.device, t.threads, t.batch_size, t.generation, t.dtype) == ("cpu", 1, 1, "greedy", "float32")
    assert t.protocol.min_iterations >= 1 and t.protocol.min_seconds > 0
    b32 = HardwareTarget.resolve("cpu-b32")
    assert b32.threads is None and b32.n_threads == len(os.sched_getaffinity(0)) and b32.batch_size == 32
    cuda = HardwareTarget.resolve("cuda-bf16-b1")
    assert cuda.device.startswith("cuda") and cuda.dtype == "bfloat16" and "untested" in cuda.description


def test_inline_table_and_round_trip():
    t = HardwareTarget.resolve({"name": "mine", "device": "cpu", "threads": 1, "generation": "beam", "num_beams": 3,
                                "protocol": {"warmup": 1, "min_iterations": 4, "min_seconds": 0.5}})
    assert t.name == "mine" and t.num_beams == 3 and t.protocol.warmup == 1
    assert HardwareTarget.from_dict(t.to_dict(), "again") == t


@pytest.mark.parametrize("bad, key", [
    ({"devise": "cpu"}, "devise"),
    ({"device": "tpu"}, "device"),
    ({"device": "cuda:x"}, "device"),
    ({"dtype": "float64"}, "dtype"),
    ({"threads": 0}, "threads"),
    ({"batch_size": True}, "batch_size"),
    ({"input_length": "long"}, "input_length"),
    ({"output_length": 0}, "output_length"),
    ({"generation": "sample"}, "generation"),
    ({"generation": "greedy", "num_beams": 4}, "num_beams"),
    ({"protocol": {"min_iters": 3}}, "min_iters"),
    ({"protocol": {"min_seconds": -1}}, "min_seconds"),
    ({"protocol": {"statistics": ["median"]}}, "statistics"),
])
def test_bad_values_name_the_key(bad, key):
    with pytest.raises(UserError, match=key) as e:
        HardwareTarget.from_dict(bad, "t")
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        HardwareTarget.resolve(str(tmp_path / "none.toml"))
    (tmp_path / "broken.toml").write_text("device = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        HardwareTarget.resolve(str(tmp_path / "broken.toml"))
    with pytest.raises(UserError, match="unknown target 'no-such'.*cpu-1t-b1"):
        HardwareTarget.resolve("no-such")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_target_is_refused_without_cuda():
    with pytest.raises(UserError, match="CUDA is not available"):
        HardwareTarget.resolve("cuda-bf16-b1").check_available()


def test_more_threads_than_cpus_is_refused():
    t = HardwareTarget.from_dict({"threads": 4096}, "wide")
    with pytest.raises(UserError, match="4096 threads"):
        t.check_available()
    HardwareTarget.from_dict({"dtype": "bfloat16"}, "bf16").check_available()  # supported on this CPU build


def test_dev_input_length_is_fixed_from_the_dev_set():
    t = HardwareTarget.from_dict({"input_length": "dev"}, "d")
    with pytest.raises(UserError, match="dev set"):
        t.fixed_input_length
    assert t.with_input_lengths([10, 30, 20, 40]).fixed_input_length == 25
    with pytest.raises(UserError, match="no dev lengths"):
        t.with_input_lengths([])


def test_fingerprint_fields():
    fp = fingerprint()
    for k in FINGERPRINT_KEYS + ("torch_threads", "transformers", "python"):
        assert k in fp
    assert fp["cpu_count"] >= 1 and fp["torch"] == torch.__version__ and fp["cpu_model"]
    assert fingerprint_mismatch(fp, dict(fp)) == []
    assert fingerprint_mismatch(fp, fp | {"cpu_model": "Other CPU"}) == [f"cpu_model: {fp['cpu_model']!r} != 'Other CPU'"]
    # generate()'s own overhead changes with transformers: figures from another version are another machine's.
    assert fingerprint_mismatch(fp, fp | {"transformers": "4.0.0"}) == [f"transformers: {fp['transformers']!r} != '4.0.0'"]


def test_load_probe_counts_other_processes_cores_not_its_own(monkeypatch):
    """Synthetic /proc/stat and process times: the machine's busy time minus this process's own, per second."""
    import os
    from collections import namedtuple

    from modsearch.cost import _target

    Times = namedtuple("Times", "user system children_user children_system elapsed")
    state = {"busy": 100.0, "mine": 10.0, "now": 0.0}
    monkeypatch.setattr(_target.LoadProbe, "_machine_busy_seconds", staticmethod(lambda: state["busy"]))
    monkeypatch.setattr(_target.os, "times", lambda: Times(state["mine"], 0.0, 0.0, 0.0, 0.0))
    monkeypatch.setattr(_target, "_cpus", lambda: 2)
    monkeypatch.setattr("time.sleep", lambda s: state.update(now=state["now"] + s, busy=state["busy"] + s * 1.0))
    probe = _target.LoadProbe(clock=lambda: state["now"])
    # First reading: 0.2 s during which the machine was busy 1 core (another process; this one idle).
    assert probe.free_cpus() == 1
    # Then 10 s in which this process used both cores itself and nothing else ran: 2 free.
    state.update(now=state["now"] + 10, busy=state["busy"] + 20, mine=state["mine"] + 20)
    assert probe.others() == pytest.approx(0.0) and probe._last is not None
    state.update(now=state["now"] + 10, busy=state["busy"] + 20, mine=state["mine"] + 20)
    assert probe.free_cpus() == 2
    # 10 s with this process on one core and another process on the other: 1 free.
    state.update(now=state["now"] + 10, busy=state["busy"] + 20, mine=state["mine"] + 10)
    assert probe.free_cpus() == 1
    # Unreadable /proc/stat: no opinion, all CPUs.
    monkeypatch.setattr(_target.LoadProbe, "_machine_busy_seconds", staticmethod(lambda: None))
    assert probe.free_cpus() == 2 and os.cpu_count() >= 1
