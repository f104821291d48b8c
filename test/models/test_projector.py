"""Gated conv projector (§V-B): output length formula, ragged tail, padding invariance."""
import math

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
