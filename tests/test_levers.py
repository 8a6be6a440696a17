"""The trainer's levers: the CPU's flags, the rule, the candidates, and the timed, cached choice."""

import pytest
import torch

from rulelib import provenance
from rulelib.diffusion import levers as lv
from rulelib.diffusion import unet
from rulelib.diffusion.schedule import Schedule

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2
"""
CPUS = {
    "amx": {"amx": True, "avx512_bf16": True, "avx512": True, "avx2": True},
    "avx512_bf16": {"amx": False, "avx512_bf16": True, "avx512": True, "avx2": True},
    "avx2": {"amx": False, "avx512_bf16": False, "avx512": False, "avx2": True},
}
CPU = torch.device("cpu")


def on_cpu(monkeypatch, kind):
    monkeypatch.setattr(provenance, "cpu_info", lambda: {"model": kind, "flags": CPUS[kind]})


def test_cpu_info_reads_the_model_and_flags_of_proc_cpuinfo():
    xeon, epyc = provenance.cpu_info(XEON), provenance.cpu_info(EPYC)
    assert xeon == {"model": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "flags": CPUS["amx"]}
    assert epyc == {"model": "AMD EPYC 7B13", "flags": CPUS["avx2"]}
    assert provenance.cpu_summary(epyc) == (
        "AMD EPYC 7B13 (AVX2; no AVX-512, no AVX-512 BF16, no AMX)"
    )
    info = {"processor": epyc["model"], "cpu_flags": epyc["flags"], "cpu_count": 2,
            "torch": "2.13", "torch_threads": 2}  # fmt: skip
    line = provenance.machine_summary(info)
    assert line.startswith("CPU AMD EPYC 7B13 (AVX2; no AVX-512") and "2 cores" in line
    # An older record without flags still prints its processor.
    assert provenance.machine_summary({"processor": "x86_64", "cpu_count": 2}).startswith(
        "CPU x86_64, 2 cores"
    )


def test_cpu_info_without_proc_cpuinfo_uses_torchs_probe():
    info = provenance.cpu_info("")
    assert info["flags"] == provenance._torch_cpu_flags() and info["model"]
    assert set(info["flags"]) == set(provenance.CPU_FLAGS)


def test_levers_names_and_dicts():
    lev = lv.Levers(bf16=False, channels_last=True, compile=True, threads=2)
    assert lev.name == "fp32+channels_last+compiled"
    assert lv.Levers.from_dict(lev.to_dict()) == lev
    assert lev.with_(bf16=True, compile=None).name == "bf16+channels_last+compiled"
    with pytest.raises(ValueError, match="levers must be a dict with keys"):
        lv.Levers.from_dict({"bf16": True})


@pytest.mark.parametrize(
    "kind, bf16, channels_last", [("amx", True, False), ("avx512_bf16", False, True),
                                  ("avx2", False, True)],
)  # fmt: skip
def test_rule_per_kind_of_cpu(monkeypatch, kind, bf16, channels_last):
    on_cpu(monkeypatch, kind)
    monkeypatch.setattr(lv.shutil, "which", lambda name: f"/usr/bin/{name}")
    short, long = lv.rule_levers(CPU, 10), lv.rule_levers(CPU, lv.CPU_COMPILE_MIN_STEPS)
    assert (short.bf16, short.channels_last, short.compile) == (bf16, channels_last, False)
    assert long.compile and long.threads == torch.get_num_threads()
    assert lv.rule_levers(CPU, 10, bf16=True).channels_last is False  # a bf16 copy: NCHW


def test_candidates_leave_out_emulated_bf16_and_keep_fixed_levers(monkeypatch):
    on_cpu(monkeypatch, "avx2")
    assert [c.name for c in lv.candidates(CPU)] == ["fp32", "fp32+channels_last"]
    on_cpu(monkeypatch, "avx512_bf16")
    assert [c.name for c in lv.candidates(CPU)] == [
        "fp32", "fp32+channels_last", "bf16", "bf16+channels_last"]  # fmt: skip
    assert [c.name for c in lv.candidates(CPU, channels_last=False)] == ["fp32", "bf16"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RULELIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "levers.json"


class FakeTimer:
    """Stands in for lv.time_levers: given figures per levers name, and a log of the calls."""

    def __init__(self, rates, spread=0.0, again=None):
        # spread: each range is rate -+ spread; again: the rates of a second, longer timing
        self.rates, self.spread, self.again, self.calls = rates, spread, again, []

    def __call__(self, model, cands, schedule, x0, device, progress=False, rounds=3):
        self.calls.append([c.name for c in cands])
        rates = self.again if rounds > 3 and self.again else self.rates
        return {c.name: {"images_per_s": rates[c.name], "min": rates[c.name] - self.spread,
                         "max": rates[c.name] + self.spread, "rounds": rounds}
                for c in cands}  # fmt: skip


def choose(steps_left, batch=4, **kw):
    x0 = torch.zeros(batch, 3, 32, 32)
    return lv.choose(None, Schedule(), x0, CPU, steps_left, "tiny", **kw)


def test_a_short_run_takes_the_rule_without_timing(monkeypatch, cache):
    on_cpu(monkeypatch, "avx2")
    monkeypatch.setattr(lv, "time_levers", FakeTimer({}))
    lev, how = choose(lv.CHOOSE_MIN_STEPS - 1)
    assert how["how"] == "rule" and lev == lv.rule_levers(CPU, 10)
    assert lv.time_levers.calls == [] and not cache.exists()
    lev, how = choose(10**6, fixed={"bf16": True, "channels_last": True, "compile": False})
    assert how["how"] == "config" and lev.name == "bf16+channels_last"


def test_a_long_run_times_the_candidates_once_per_machine_and_network(monkeypatch, cache):
    on_cpu(monkeypatch, "avx512_bf16")
    rates = {"fp32": 80, "fp32+channels_last": 96, "bf16": 74, "bf16+channels_last": 90}
    monkeypatch.setattr(lv, "time_levers", FakeTimer(rates))
    lev, how = choose(lv.CHOOSE_MIN_STEPS)  # below CPU_COMPILE_MIN_STEPS: no compiled candidate
    assert lev.name == "fp32+channels_last" and how["how"] == "timed"
    assert how["figures"]["bf16"]["images_per_s"] == 74 and cache.exists()
    assert lv.time_levers.calls == [list(rates)]
    lev2, how2 = choose(lv.CHOOSE_MIN_STEPS)  # the same machine and network: the cache
    assert lev2 == lev and how2["how"] == "cached" and len(lv.time_levers.calls) == 1
    assert choose(lv.CHOOSE_MIN_STEPS, batch=8)[1]["how"] == "timed"  # another batch size
    # Fixed levers are kept: the fastest NCHW candidate.
    assert choose(lv.CHOOSE_MIN_STEPS, fixed={"channels_last": False})[0].name == "fp32"


@pytest.mark.parametrize("compiled_rate, expect", [(120, True), (85, False)])
def test_compiled_regions_are_timed_against_the_fastest_eager_candidate(
    monkeypatch, cache, compiled_rate, expect
):
    on_cpu(monkeypatch, "avx2")
    monkeypatch.setattr(lv.shutil, "which", lambda name: f"/usr/bin/{name}")
    rates = {"fp32": 80, "fp32+channels_last": 96, "fp32+channels_last+compiled": compiled_rate}
    monkeypatch.setattr(lv, "time_levers", FakeTimer(rates))
    lev, how = choose(lv.CPU_COMPILE_MIN_STEPS)
    assert lv.time_levers.calls[-1] == ["fp32+channels_last", "fp32+channels_last+compiled"]
    assert lev.compile is expect and lev.channels_last
    assert choose(lv.CPU_COMPILE_MIN_STEPS, fixed={"compile": False})[0].compile is False


def test_the_fastest_measured_candidate_is_kept_and_the_choice_says_why(monkeypatch, cache):
    """The AVX2 EPYC case: channels_last timed faster than NCHW (77.4 against 71.2 img/s) must be
    the choice, and the summary names the figures it rests on."""
    on_cpu(monkeypatch, "avx2")
    rates = {"fp32": 71.2, "fp32+channels_last": 77.4}
    monkeypatch.setattr(lv, "time_levers", FakeTimer(rates, spread=1.0))
    lev, how = choose(lv.CHOOSE_MIN_STEPS)
    assert lev.name == "fp32+channels_last"
    assert lv.time_levers.calls == [["fp32", "fp32+channels_last"]]  # separated: no second timing
    assert "fp32+channels_last 77.4" in how["why"] and "fp32 71.2" in how["why"]
    assert "noise" not in how["why"]


@pytest.mark.parametrize("again, expect", [
    ({"fp32": 76.0, "fp32+channels_last": 74.0}, "fp32"),
    ({"fp32": 74.0, "fp32+channels_last": 76.0}, "fp32+channels_last"),
])  # fmt: skip
def test_overlapping_timings_are_timed_again_longer_and_the_faster_kept(
    monkeypatch, cache, again, expect
):
    on_cpu(monkeypatch, "avx2")
    first = {"fp32": 75.0, "fp32+channels_last": 75.5}  # ranges -+4: not told apart
    monkeypatch.setattr(lv, "time_levers", FakeTimer(first, spread=4.0, again=again))
    lev, how = choose(lv.CHOOSE_MIN_STEPS)
    assert lev.name == expect
    assert lv.time_levers.calls == [list(first), sorted(first, key=lambda n: -first[n])]
    assert how["figures"][expect]["rounds"] == lv.CONFIRM_ROUNDS
    assert "timed again" in how["why"] and "within the timing's noise" in how["why"]
    # the cache holds the longer timing: a later run neither times again nor changes its mind
    lev2, how2 = choose(lv.CHOOSE_MIN_STEPS)
    assert lev2 == lev and how2["how"] == "cached" and len(lv.time_levers.calls) == 2


def test_a_rejected_compiled_candidate_leaves_the_eager_one_and_says_so(monkeypatch, cache):
    on_cpu(monkeypatch, "avx2")
    monkeypatch.setattr(lv.shutil, "which", lambda name: f"/usr/bin/{name}")
    rates = {"fp32": 80, "fp32+channels_last": 96}

    def timer(model, cands, schedule, x0, device, progress=False, rounds=3):
        return {c.name: {"rejected": "wrong gradients"} if c.compile else
                {"images_per_s": rates[c.name], "min": rates[c.name], "max": rates[c.name],
                 "rounds": rounds} for c in cands}  # fmt: skip

    monkeypatch.setattr(lv, "time_levers", timer)
    lev, how = choose(lv.CPU_COMPILE_MIN_STEPS)
    assert lev.name == "fp32+channels_last" and not lev.compile
    assert "fp32+channels_last+compiled rejected" in how["why"]


def test_a_choice_without_timing_says_why(monkeypatch, cache):
    on_cpu(monkeypatch, "avx2")
    monkeypatch.setattr(lv, "time_levers", FakeTimer({}))
    _, how = choose(3)  # benchmarks/train.py --auto --auto-steps 3
    assert how["figures"] is None and "3-step run" in how["why"]
    assert str(lv.CHOOSE_MIN_STEPS) in how["why"]


def test_a_resumed_run_keeps_its_recorded_levers(monkeypatch, cache):
    monkeypatch.setattr(lv, "time_levers", FakeTimer({}))
    rec = lv.Levers(bf16=True, channels_last=False, compile=False, threads=2)
    lev, how = choose(10**6, recorded=rec)
    assert lev == rec and how["how"] == "resumed" and lv.time_levers.calls == []


def test_time_levers_times_copies_and_leaves_the_model_and_rng_alone():
    torch.manual_seed(0)
    model = unet.build("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    rng = torch.get_rng_state()
    cands = [lv.Levers(False, False, False, 1), lv.Levers(False, True, False, 1)]
    out = lv.time_levers(model, cands, Schedule(), x0, CPU, rounds=2, steps=1, warmup=1)
    assert sorted(out) == ["fp32", "fp32+channels_last"]
    for f in out.values():
        assert f["rounds"] == 2 and 0 < f["min"] <= f["images_per_s"] <= f["max"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.net.conv_in.weight.is_contiguous()  # the channels_last copy was a copy


def test_the_step_under_channels_last_gives_the_nchw_loss_within_rounding():
    """channels_last changes the kernels' summation order, not the function: one step's loss and
    gradients agree with NCHW's to fp32 rounding (1e-5 relative), far below a real difference."""
    torch.manual_seed(0)
    model = unet.build("tiny")
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    grads = []
    for cl in (False, True):
        st = lv.Step(unet.build("tiny"), lv.Levers(False, cl, False, 1), CPU)
        st.model.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(st.params, lr=0.0)  # keeps the gradients readable: no zero_grad
        opt.zero_grad = lambda set_to_none=True: None
        loss = st.step(Schedule(), x0.contiguous(memory_format=st.fmt),
                       torch.Generator().manual_seed(1), opt)  # fmt: skip
        grads.append((float(loss.detach()), torch.cat([p.grad.flatten() for p in st.params])))
    (l0, g0), (l1, g1) = grads
    assert abs(l0 - l1) <= 1e-5 * abs(l0)
    assert float((g1 - g0).norm() / g0.norm()) < 1e-4
