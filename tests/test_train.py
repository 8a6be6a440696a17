"""The trainer: bitwise resumption, checkpoints, and every refusal of bad input."""

import contextlib
import json

import numpy as np
import pytest
import torch

from rulelib.diffusion import checkpoint as ck
from rulelib.diffusion import levers as lv
from rulelib.diffusion import train as tr
from rulelib.diffusion import unet
from rulelib.diffusion.checkpoint import CheckpointError, list_checkpoints, load_model
from rulelib.diffusion.config import TrainConfig
from rulelib.diffusion.schedule import images_to_tensor
from rulelib.diffusion.train import TrainingError


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)


def cfg(**kw):
    # 12 images at batch 4: 3 steps per epoch; the EMA starts averaging at step 2.
    base = dict(task="A", preset="tiny", epochs=2, batch_size=4, ckpt_every=1, log_every=2,
                ema_start=2, lr=1e-3)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def states(run):
    out = []
    for w in ("raw", "ema"):
        m, _, epoch = load_model(run, weights=w)
        out.append((epoch, m.state_dict()))
    return out


def same(sd1, sd2):
    return sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_resume_is_bitwise_equal_to_uninterrupted(images, tmp_path):
    s2 = tr.train(cfg(), images, tmp_path / "straight", progress=False)
    assert s2["epochs"] == 2 and s2["steps"] == 6 and s2["finished"]
    tr.train(cfg(epochs=1), images, tmp_path / "stopped", progress=False)
    s = tr.train(cfg(), images, tmp_path / "stopped", progress=False)
    assert s["start_epoch"] == 1 and s["start_step"] == 3
    (e1, raw1), (_, ema1) = states(tmp_path / "straight")
    (e2, raw2), (_, ema2) = states(tmp_path / "stopped")
    assert e1 == e2 == 2
    assert same(raw1, raw2) and same(ema1, ema2)
    assert not same(raw1, ema1)  # the EMA is a different set of weights once it averages
    assert [e for e, _ in list_checkpoints(tmp_path / "straight")] == [1, 2]
    assert (tmp_path / "straight/checkpoints/latest").read_text().strip() == "epoch_000002"
    # A finished run is not retrained (and nothing is overwritten).
    again = tr.train(cfg(), images, tmp_path / "straight", progress=False)
    assert again["steps"] == 6 and again["start_step"] == 6
    assert same(states(tmp_path / "straight")[0][1], raw1)


def test_a_run_killed_mid_epoch_resumes_there_to_the_bit(images, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    tr.train(cfg(), images, straight, progress=False)
    run, calls, real = tmp_path / "killed", [0], lv.Step.step

    def step_then_die(self, *a, **kw):  # killed during step 5 (the second of epoch 2)
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(lv.Step, "step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        tr.train(cfg(resume_steps=1), images, run, progress=False)
    # points after steps 1, 2 (epoch 1) were removed by its checkpoint; step 4's is the newest
    assert [s for s, _ in ck.midepoch_points(run)] == [4]
    assert [e for e, _ in list_checkpoints(run)] == [1]
    monkeypatch.setattr(lv.Step, "step", real)
    s = tr.train(cfg(resume_steps=1), images, run, progress=False)
    assert s["start_epoch"] == 1 and s["start_step"] == 4 and s["steps"] == 6
    (e1, raw1), (_, ema1) = states(straight)
    (e2, raw2), (_, ema2) = states(run)
    assert e1 == e2 == 2 and same(raw1, raw2) and same(ema1, ema2)
    assert ck.midepoch_points(run) == [] and [e for e, _ in list_checkpoints(run)] == [1, 2]


def test_ema_is_the_raw_weights_until_ema_start_then_their_running_average(images, tmp_path):
    """One step per epoch and a checkpoint per epoch: raw weights w_1..w_5 after steps 0..4.
    With ema_start = 3 and decay 0.5 the EMA is w_e for e <= 3, then (w_3 + w_4) / 2, then
    (that + w_5) / 2 (Polyak averaging started from the raw weights)."""
    c = cfg(epochs=5, batch_size=4, ema_start=3, ema_decay=0.5)
    tr.train(c, images[:4], tmp_path, progress=False)
    raw, ema = {}, {}
    for e, folder in list_checkpoints(tmp_path):
        raw[e] = load_model(folder, weights="raw")[0].state_dict()
        ema[e] = load_model(folder, weights="ema")[0].state_dict()
    assert sorted(raw) == [1, 2, 3, 4, 5]
    for e in (1, 2, 3):
        assert same(ema[e], raw[e]), e
    params = [k for k, v in raw[5].items() if v.is_floating_point() and "running" not in k]
    expect4 = {k: raw[3][k] + 0.5 * (raw[4][k] - raw[3][k]) for k in params}
    expect5 = {k: expect4[k] + 0.5 * (raw[5][k] - expect4[k]) for k in params}
    for k in params:
        torch.testing.assert_close(ema[4][k], expect4[k], rtol=0, atol=1e-6)
        torch.testing.assert_close(ema[5][k], expect5[k], rtol=0, atol=1e-6)
    assert not same(ema[5], raw[5])


def test_time_limit_stops_with_a_checkpoint_and_resumes(images, tmp_path):
    s = tr.train(cfg(ckpt_every=5, epochs=3), images, tmp_path, progress=False, time_limit_s=0)
    assert not s["finished"] and s["epochs"] == 1
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]
    s = tr.train(cfg(ckpt_every=5, epochs=3), images, tmp_path, progress=False)
    assert s["finished"] and [e for e, _ in list_checkpoints(tmp_path)] == [1, 3]


def test_refuses_a_different_config_naming_the_keys(images, tmp_path):
    tr.train(cfg(epochs=1), images, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"different config \(lr: 0.001 -> 0.002, seed"):
        tr.train(cfg(lr=2e-3, seed=1), images, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="different data"):
        tr.train(cfg(), images[::-1].copy(), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="already holds a trained run"):
        tr.train(cfg(), images, tmp_path, progress=False, resume=False)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]  # nothing was touched


def test_corrupt_or_missing_checkpoint_is_named(images, tmp_path):
    tr.train(cfg(), images, tmp_path, progress=False)
    bad = tmp_path / "checkpoints/epoch_000002/model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt checkpoint file .*epoch_000002/model"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="corrupt checkpoint file .*epoch_000002/model"):
        tr.train(cfg(epochs=3), images, tmp_path, progress=False)
    state = tmp_path / "checkpoints/epoch_000001/state.pt"
    state.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt checkpoint file .*state.pt"):
        ck._load_state(state)
    with pytest.raises(CheckpointError, match="missing run folder or checkpoint"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "empty_run")


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(epochs=0), "epochs must be a positive integer, got 0"),
        (dict(batch_size=-16), "batch_size must be a positive integer, got -16"),
        (dict(preset="huge"), "unknown preset 'huge'"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(resume_steps=-1), "resume_steps must be an integer >= 0, got -1"),
        (dict(device="tpu9"), "device"),
    ],
)
def test_bad_config_values(bad, match):
    with pytest.raises(ValueError, match=match):
        cfg(**bad)


def test_paper_defaults():
    c = TrainConfig(task="C")
    assert (c.epochs, c.batch_size, c.lr, c.seed, c.ema_decay, c.ema_start) == (
        1600,
        16,
        3e-4,
        0,
        0.995,
        2000,
    )
    assert c.preset == "paper" and c.sample_weights == "raw" and c.T == 1000
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


BUILD = unet.build  # the real builder, before any monkeypatching


class Exploding(torch.nn.Module):
    """A tiny denoiser whose output becomes NaN from its `bad_call`-th forward call on."""

    def __init__(self, bad_call):
        super().__init__()
        self.net, self.calls, self.bad_call = BUILD("tiny"), 0, bad_call

    def forward(self, x, t):
        self.calls += 1
        y = self.net(x, t)
        return y * float("nan") if self.calls >= self.bad_call else y


def test_nan_loss_stops_names_the_step_and_keeps_the_checkpoint(images, tmp_path, monkeypatch):
    monkeypatch.setattr(unet, "build", lambda preset: Exploding(bad_call=5))
    with pytest.raises(TrainingError, match="NaN/inf at step 4 "):
        tr.train(cfg(epochs=3, log_every=100), images, tmp_path, progress=False)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]  # epoch 2 never saved


def test_out_of_memory_is_reraised_with_advice(images, tmp_path, monkeypatch):
    class OOM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(unet, "build", lambda preset: OOM())
    with pytest.raises(TrainingError, match="out of memory .* batch size 4.*lower batch_size"):
        tr.train(cfg(), images, tmp_path, progress=False)


def test_bad_images(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        tr.train(cfg(), np.zeros((4, 32, 32, 3), np.float32), tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------
# The CPU bf16 path: a bf16 copy of the network against fp32 master weights (levers.Bf16Copy)


def _autocast_grads(model, x_t, t, noise):
    with torch.autocast("cpu", torch.bfloat16), lv.attention_backend(torch.device("cpu"), True)():
        loss = torch.nn.functional.mse_loss(model(x_t, t).float(), noise)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_bf16_copy_gradients_are_autocasts_to_the_bit():
    torch.manual_seed(0)
    model = unet.build("tiny")
    with torch.no_grad():  # GroupNorm affine values that bf16 cannot hold exactly
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.add_(torch.randn_like(m.weight) * 0.1)
    g = torch.Generator().manual_seed(1)
    x_t, noise = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    expected = _autocast_grads(model, x_t, t, noise)

    copy = lv.Bf16Copy(model)
    for m in copy.modules():  # the master's exact GroupNorm values, in fp32
        if isinstance(m, torch.nn.GroupNorm):
            assert m.weight.dtype == torch.float32
    with lv.attention_backend(torch.device("cpu"), True)():
        loss = torch.nn.functional.mse_loss(copy(x_t, t).float(), noise)
    loss.backward()
    master = [p.detach().clone().requires_grad_() for p in model.parameters()]
    copy.grads_to(master)
    assert all(p.grad is None for p in copy.parameters())
    for p, e in zip(master, expected, strict=True):
        assert p.grad.dtype == torch.float32 and torch.equal(p.grad, e)


def test_cpu_bf16_training_is_an_autocast_loop_to_the_bit(images, tmp_path):
    """The trainer's eager bf16 copy against a plain autocast loop: equal weights after 3 steps."""
    c = cfg(epochs=1, bf16=True, compile=False, channels_last=False, device="cpu")
    s = tr.train(c, images, tmp_path, progress=False)
    assert s["precision"] == "bf16 copy" and not s["compile"] and s["levers_how"] == "config"
    torch.manual_seed(c.seed)
    model = unet.build(c.preset)
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, fused=True)
    gen = torch.Generator().manual_seed(c.seed)
    schedule, data = c.schedule(), images_to_tensor(images)
    perm = torch.randperm(len(data), generator=gen)
    for i in range(0, len(data), c.batch_size):
        with torch.autocast("cpu", torch.bfloat16), lv.attention_backend(data.device, True)():
            loss = schedule.loss(model, data[perm[i : i + c.batch_size]], gen)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert same(load_model(tmp_path)[0].state_dict(), model.state_dict())


def _cut(fn, **kw):
    """A stand-in for torch.compile that miscompiles: fn's output, with every gradient cut off."""
    return lambda *a, **k: fn(*a, **k).detach().requires_grad_()


def test_a_miscompiled_network_is_caught_and_the_run_trains_eagerly(images, tmp_path, monkeypatch):
    """levers.check_compiled compares the compiled gradients with eager ones before training: a
    compiled network that passes no gradient back is rejected with a warning, and the run is the
    eager run, to the bit (on CPU the network is compiled by regions, levers.CompiledRegions)."""
    eager = tr.train(cfg(epochs=1, compile=False), images, tmp_path / "eager", progress=False)
    assert eager["compile_rejected"] is None
    monkeypatch.setattr(lv.torch, "compile", _cut)
    with pytest.warns(RuntimeWarning, match="torch.compile rejected .* all zero for"):
        s = tr.train(cfg(epochs=1, compile=True), images, tmp_path / "bad", progress=False)
    assert s["compile"] is False and "all zero" in s["compile_rejected"]
    assert same(states(tmp_path / "bad")[0][1], states(tmp_path / "eager")[0][1])


def test_check_compiled_on_a_whole_network():
    """The CUDA path compiles the whole network: check_compiled(net, torch.compile(net), ...)."""
    torch.manual_seed(0)
    net, c = unet.build("tiny"), cfg()
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    args = (c.schedule(), x0, False, contextlib.nullcontext)
    assert lv.check_compiled(net, net, *args) is None  # the same function: accepted
    assert "all zero" in lv.check_compiled(net, _cut(net), *args)
    assert all(p.grad is None for p in net.parameters())  # the check leaves no gradients


def test_compile_pays_on_cuda_and_on_long_cpu_runs_with_a_compiler(monkeypatch):
    cpu, n = torch.device("cpu"), lv.CPU_COMPILE_MIN_STEPS
    monkeypatch.setattr(lv.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert lv.compile_pays(cpu, n) and not lv.compile_pays(cpu, n - 1)
    assert lv.compile_pays(torch.device("cuda"), 1)
    monkeypatch.setattr(lv.shutil, "which", lambda name: None)  # no C++ compiler for inductor
    assert not lv.compile_pays(cpu, 10 * n)


@pytest.mark.skipif(not lv.shutil.which("g++"), reason="inductor needs a C++ compiler")
def test_compiled_bf16_copy_trains_like_eager(images, tmp_path):
    """torch.compile fuses the bf16 copy's kernels, so its rounding differs from eager's. After 3
    AdamW steps the compiled run must be as close to the eager bf16 run as that is to fp32 (here
    both distances are ~7.5 % of how far the weights moved; 1.5x of it is allowed)."""
    runs, settings = (
        {},
        {
            "fp32": dict(bf16=False, compile=False),
            "bf16": dict(bf16=True, compile=False),
            "compiled": dict(bf16=True, compile=True),
        },
    )
    for name, kw in settings.items():
        s = tr.train(cfg(epochs=1, device="cpu", **kw), images, tmp_path / name, progress=False)
        assert s["compile"] is kw["compile"] and s["compile_rejected"] is None
        runs[name] = load_model(tmp_path / name)[0].state_dict()

    def dist(a, b):
        return sum(float((a[k] - b[k]).norm() ** 2) for k in a) ** 0.5

    torch.manual_seed(0)
    moved = dist(runs["bf16"], unet.build("tiny").state_dict())
    assert 0 < dist(runs["compiled"], runs["bf16"]) < 1.5 * dist(runs["bf16"], runs["fp32"])
    assert dist(runs["bf16"], runs["fp32"]) < 0.2 * moved


def test_bf16_copy_leaves_an_unused_parameter_alone(images, tmp_path, monkeypatch):
    """A parameter the step does not use has no gradient: AdamW must skip it (no weight decay),
    as it does under autocast, rather than see a zero gradient."""

    def build(preset):
        model = BUILD("tiny")
        model.unused = torch.nn.Parameter(torch.ones(3))
        return model

    monkeypatch.setattr(unet, "build", build)
    c = cfg(epochs=1, bf16=True, compile=False, device="cpu")
    tr.train(c, images, tmp_path, progress=False)
    weights = load_model(tmp_path)[0].state_dict()
    torch.manual_seed(0)  # the trainer's initial weights
    init = build("tiny").state_dict()
    assert torch.equal(weights["unused"], torch.ones(3))
    assert not torch.equal(weights["net.conv_in.weight"], init["net.conv_in.weight"])


# ---------------------------------------------------------------------------------------------
# The levers of a run (rulelib.diffusion.levers): chosen once, recorded, kept on resumption


def test_a_resumed_run_keeps_the_levers_it_started_with(images, tmp_path, monkeypatch):
    """Started in channels_last; resumed with no levers set while the rule would now say NCHW:
    the checkpoint's levers are kept, and the run equals an uninterrupted channels_last run to
    the bit (whereas NCHW's kernels round differently)."""
    straight = tr.train(cfg(channels_last=True), images, tmp_path / "straight", progress=False)
    assert straight["channels_last"] and straight["levers_how"] == "rule"
    nchw = tr.train(cfg(channels_last=False), images, tmp_path / "nchw", progress=False)
    assert not nchw["channels_last"]
    tr.train(cfg(epochs=1, channels_last=True), images, tmp_path / "stopped", progress=False)
    nchw_rule = lv.Levers(bf16=False, channels_last=False, compile=False, threads=1)
    monkeypatch.setattr(lv, "rule_levers", lambda *a, **k: nchw_rule)
    s = tr.train(cfg(), images, tmp_path / "stopped", progress=False)
    assert s["levers_how"] == "resumed" and s["channels_last"] and s["levers"] == straight["levers"]
    (_, raw1), (_, ema1) = states(tmp_path / "straight")
    (_, raw2), (_, ema2) = states(tmp_path / "stopped")
    assert same(raw1, raw2) and same(ema1, ema2)
    assert not same(raw1, states(tmp_path / "nchw")[0][1])  # the layout does change the bits
    state = ck._load_state(list_checkpoints(tmp_path / "stopped")[-1][1] / "state.pt")
    assert state["levers"] == {"device": "cpu", **lv.Levers.from_dict(
        {k: v for k, v in state["levers"].items() if k != "device"}).to_dict()}  # fmt: skip
    assert state["levers"]["channels_last"] is True


def test_a_timed_choice_is_recorded_and_does_not_change_the_run(images, tmp_path, monkeypatch):
    """A run long enough to time its levers (CHOOSE_MIN_STEPS lowered to 1 here): the summary
    names the choice and its figures, the timing leaves the run's weights and generators alone
    (the run equals one given the chosen levers outright), and a second run reads the cache."""
    monkeypatch.setenv("RULELIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(lv, "CHOOSE_MIN_STEPS", 1)
    s = tr.train(cfg(epochs=1, compile=False), images, tmp_path / "timed", progress=False)
    assert s["levers_how"] == "timed" and s["levers_seconds"] > 0
    assert s["levers"] in s["levers_figures"] and "fp32+channels_last" in s["levers_figures"]
    best = max(s["levers_figures"], key=lambda k: s["levers_figures"][k]["images_per_s"])
    assert s["levers"] == best
    given = cfg(epochs=1, compile=False, bf16=s["bf16"], channels_last=s["channels_last"])
    g = tr.train(given, images, tmp_path / "given", progress=False)
    assert g["levers_how"] == "config" and g["levers"] == s["levers"]
    assert same(states(tmp_path / "timed")[0][1], states(tmp_path / "given")[0][1])
    again = tr.train(cfg(epochs=1, compile=False), images, tmp_path / "again", progress=False)
    assert again["levers_how"] == "cached" and again["levers"] == s["levers"]


def test_the_lever_choice_settles_in_the_run_that_times_it(monkeypatch):
    """When the longer timing of the top two moves a third candidate into the top two, that pair
    is timed again in the same run, so the cached figures are settled and a later run that reads
    them times nothing (it once re-timed under load, and a cached run reported "timed")."""
    import collections

    Cand = collections.namedtuple("Cand", "name")
    a, b, c = Cand("a"), Cand("b"), Cand("c")

    def fig(rate, half, rounds):
        return {"images_per_s": rate, "min": rate - half, "max": rate + half, "rounds": rounds}

    longer = {"a": fig(90, 1, 9), "b": fig(91, 1, 9), "c": fig(96, 1, 9)}
    timed = []

    def fake_time(model, pair, *args, rounds=None, **kw):
        timed.append(sorted(p.name for p in pair))
        return {p.name: longer[p.name] for p in pair}

    monkeypatch.setattr(lv, "time_levers", fake_time)
    figures = {"a": fig(100, 5, 3), "b": fig(98, 5, 3), "c": fig(97, 5, 3)}
    best, _, again = lv._settle(None, [a, b, c], None, None, None, figures, False)
    assert again and timed == [["a", "b"], ["b", "c"]] and best == c
    best2, _, again2 = lv._settle(None, [a, b, c], None, None, None, dict(figures), False)
    assert best2 == c and not again2 and len(timed) == 2  # the cached figures: nothing timed
