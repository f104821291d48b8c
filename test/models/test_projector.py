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


def test_structure_follows_the_paper():
    proj = GatedConvProjector(16, 24, hidden_size=20)
    for conv in (proj.gate, proj.up):
        assert conv.kernel_size == (4,) and conv.stride == (4,) and conv.out_channels == 20
    # SiLU gate: zeroing the gate branch output (bias -inf-like) kills the signal before the residual
    x = torch.randn(1, 8, 16)
    with torch.no_grad():
        proj.gate.weight.zero_()
        proj.gate.bias.fill_(-1e4)
        proj.linear.weight.zero_()
        proj.linear.bias.zero_()
        y, _ = proj(x, torch.tensor([8]))
        # z = LayerNorm(0) = LayerNorm bias (0) -> output = out.bias
    torch.testing.assert_close(y[0], proj.out.bias.expand(2, 24), atol=1e-4, rtol=0)
