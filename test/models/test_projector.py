"""Gated conv projector (§V-B): output length formula, ragged tail, padding invariance."""
import math

import pytest
import torch

from zlora.models.projector import GatedConvProjector


def test_output_length_is_ceil_t_over_4_for_every_tail():
    torch.manual_seed(0)
    proj = GatedConvProjector(16, 24, hidden_size=20)
    for t in range(1, 14):
        y, n = proj(torch.randn(1, t, 16), torch.tensor([t]))
        assert y.shape == (1, math.ceil(t / 4), 24)
        assert n.tolist() == [math.ceil(t / 4)] == proj.output_lengths(torch.tensor([t])).tolist()


def test_padded_rows_equal_rows_alone_and_tail_is_zero_padded():
    torch.manual_seed(0)
    proj = GatedConvProjector(16, 24)
    x = torch.randn(3, 13, 16)
    lens = torch.tensor([13, 6, 1])
    x[1, 6:] = 100.0                                      # garbage beyond the length must not leak
    y, n = proj(x, lens)
    for i, t in enumerate(lens.tolist()):
        alone, _ = proj(x[i:i + 1, :t], lens[i:i + 1])
        torch.testing.assert_close(y[i, :n[i]], alone[0], atol=1e-6, rtol=1e-6)
    # the ragged tail (6 = 4 + 2 frames) is the 2 frames followed by 2 zero frames
    padded = torch.cat([x[1:2, 4:6], torch.zeros(1, 2, 16)], 1)
    tail, _ = proj(padded, torch.tensor([4]))
    torch.testing.assert_close(y[1, 1], tail[0, 0], atol=1e-6, rtol=1e-6)


def conv_reference(proj: GatedConvProjector, gate_w, gate_b, up_w, up_b, x, lens):
    """Eq. 2 written with the two strided Conv1d of the paper (weights (h, d, k))."""
    t = x.shape[1]
    x = x * (torch.arange(t)[None, :] < lens[:, None])[..., None]
    x = torch.nn.functional.pad(x.transpose(1, 2), (0, (-t) % proj.k))
    conv = lambda w, b: torch.nn.functional.conv1d(x, w, b, stride=proj.k)
    z = (torch.nn.functional.silu(conv(gate_w, gate_b)) * conv(up_w, up_b)).transpose(1, 2)
    return proj.out(proj.norm(z + proj.linear(z)))


def random_conv_weights(h, d, k):
    return torch.randn(h, d, k), torch.randn(h), torch.randn(h, d, k), torch.randn(h)


def test_one_linear_equals_the_two_strided_convolutions_and_loads_their_checkpoints():
    torch.manual_seed(0)
    proj = GatedConvProjector(16, 24, hidden_size=20, downsample=3)
    gw, gb, uw, ub = random_conv_weights(20, 16, 3)
    sd = {k: v for k, v in proj.state_dict().items() if not k.startswith("gate_up.")}
    sd.update({"gate.weight": gw, "gate.bias": gb, "up.weight": uw, "up.bias": ub})
    proj.load_state_dict(sd)                       # the older Conv1d layout, converted on load
    x, lens = torch.randn(2, 11, 16), torch.tensor([11, 7])
    y, _ = proj(x, lens)
    torch.testing.assert_close(y, conv_reference(proj, gw, gb, uw, ub, x, lens), atol=1e-4, rtol=1e-4)


def test_speech_llm_loads_a_checkpoint_with_the_conv_projector(make_model):
    from zlora.models.stages import trainable_state_dict

    model = make_model()
    model.set_stage(1)
    sd = trainable_state_dict(model)
    w = sd.pop("projector.gate_up.weight")
    b = sd.pop("projector.gate_up.bias")
    h, k = model.projector.h, model.projector.k
    as_conv = lambda m: m.reshape(h, k, -1).permute(0, 2, 1)              # (h, k*d) -> (h, d, k)
    sd.update({"projector.gate.weight": as_conv(w[:h]), "projector.gate.bias": b[:h],
               "projector.up.weight": as_conv(w[h:]), "projector.up.bias": b[h:]})
    with torch.no_grad():
        model.projector.gate_up.weight.zero_()
    model.load_trainable_state_dict(sd, strict=True)
    torch.testing.assert_close(model.projector.gate_up.weight, w)


def test_structure_follows_the_paper():
    proj = GatedConvProjector(16, 24, hidden_size=20)
    assert proj.k == 4 and proj.gate_up.in_features == 4 * 16 and proj.gate_up.out_features == 2 * 20
    # SiLU gate: zeroing the gate branch output (bias -inf-like) kills the signal before the residual
    x = torch.randn(1, 8, 16)
    with torch.no_grad():
        proj.gate_up.weight[:20].zero_()
        proj.gate_up.bias[:20].fill_(-1e4)
        proj.linear.weight.zero_()
        proj.linear.bias.zero_()
        y, _ = proj(x, torch.tensor([8]))
        # z = LayerNorm(0) = LayerNorm bias (0) -> output = out.bias
    torch.testing.assert_close(y[0], proj.out.bias.expand(2, 24), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# the projector registry: keyword options (model.projector.conf), the older form, a new projector

def test_conf_is_checked_against_the_projectors_options():
    from zlora.config import ConfigError, from_dict
    from zlora.models import ProjectorConfig

    cfg = from_dict(ProjectorConfig, {"kind": "gated_conv", "conf": {"downsample": 2}}, "model.projector")
    assert cfg.conf == {"downsample": 2, "hidden_size": None}       # completed with the defaults
    for conf, msg in [({"downsampel": 2}, r"model\.projector\.conf: unknown key\(s\) 'downsampel' for "
                                          r"projector gated_conv; its options: downsample, hidden_size"),
                      ({"downsample": "4"}, r"model\.projector\.conf\.downsample: expected an integer"),
                      ({"downsample": 0}, r"model\.projector\.conf\.downsample: must be >= 1, got 0")]:
        with pytest.raises(ConfigError, match=msg):
            from_dict(ProjectorConfig, {"conf": conf}, "model.projector")
    with pytest.raises(ConfigError, match=r"model\.projector\.kind: unknown projector 'gated'; known: gated_conv"):
        from_dict(ProjectorConfig, {"kind": "gated"}, "model.projector")


def test_the_older_form_still_loads_and_builds_the_same_model(make_model):
    from zlora.config import ConfigError, from_dict, to_dict
    from zlora.models import ProjectorConfig

    old = {"kind": "gated_conv", "downsample": 3, "hidden_size": None}   # an older EXP/config.yaml's
    cfg = from_dict(ProjectorConfig, old, "model.projector")
    assert cfg.conf == {"downsample": 3, "hidden_size": None}
    assert to_dict(cfg) == {"kind": "gated_conv", "conf": {"downsample": 3, "hidden_size": None}}
    assert from_dict(ProjectorConfig, to_dict(cfg)) == cfg              # written back, read again
    assert from_dict(ProjectorConfig, {"downsample": 3, "conf": {"downsample": 3}}) == cfg
    with pytest.raises(ConfigError, match="downsample given twice"):
        from_dict(ProjectorConfig, {"downsample": 3, "conf": {"downsample": 4}})
    a, b = make_model(projector={"kind": "gated_conv", "downsample": 3, "hidden_size": 20}), \
        make_model(projector={"conf": {"downsample": 3, "hidden_size": 20}})
    assert a.projector.k == 3 and a.projector.h == 20
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_projectors_options_are_its_constructor_keywords():
    import dataclasses
    import inspect

    from zlora.models.registry import PROJECTORS

    assert "gated_conv" in PROJECTORS.names()
    for kind in PROJECTORS.names():
        cls = PROJECTORS.get(kind)
        params = list(inspect.signature(cls.__init__).parameters.values())[3:]     # after self, d_in, d_out
        fields = [f for f in dataclasses.fields(cls.Options) if f.init]
        assert {p.name: p.default for p in params} == {f.name: f.default for f in fields}, kind
        assert all(p.kind == p.POSITIONAL_OR_KEYWORD or p.kind == p.KEYWORD_ONLY for p in params), kind


def doc_example(heading: str) -> str:
    """The first ```python block under ``heading`` in docs/extending.md."""
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs/extending.md"
    section = doc.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


@pytest.fixture
def mean_pool(monkeypatch, tmp_path):
    """docs/extending.md's projector: the doc's code as a module outside zlora/, imported."""
    import importlib.util
    import sys

    from zlora.models.registry import PROJECTORS

    src = tmp_path / "zlora_doc_mean_pool.py"
    src.write_text(doc_example("## Adding a projector"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(src.stem, src)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, src.stem, mod)
    spec.loader.exec_module(mod)
    yield mod
    PROJECTORS.unregister("mean_pool")


def test_a_projector_registered_outside_zlora_builds_and_trains(mean_pool, make_model):
    from models_testlib import random_batch
    from zlora.config import ConfigError, from_dict
    from zlora.models import ProjectorConfig

    model = make_model(projector={"kind": "mean_pool", "conf": {"stride": 3}})
    assert isinstance(model.projector, mean_pool.MeanPoolProjector) and model.projector.k == 3
    model.set_stage(1)
    loss = model(random_batch([50, 37]))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.projector.out.weight.grad.abs().sum() > 0
    proj = mean_pool.MeanPoolProjector(16, 24, stride=4)              # padded rows equal rows alone
    x, lens = torch.randn(2, 11, 16), torch.tensor([11, 6])
    y, n = proj(x, lens)
    assert n.tolist() == [3, 2]
    torch.testing.assert_close(y[1, :2], proj(x[1:, :6], lens[1:])[0][0], atol=1e-6, rtol=1e-6)
    assert from_dict(ProjectorConfig, {"kind": "mean_pool"}).conf == {"stride": 4}
    with pytest.raises(ConfigError, match="'downsample' for projector mean_pool; its options: stride"):
        from_dict(ProjectorConfig, {"kind": "mean_pool", "conf": {"downsample": 4}})
    with pytest.raises(ConfigError, match=r"model\.projector: top-level downsample is gated_conv's older form"):
        from_dict(ProjectorConfig, {"kind": "mean_pool", "downsample": 4}, "model.projector")
