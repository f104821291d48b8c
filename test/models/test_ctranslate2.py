"""CTranslate2 model.bin reader and the Whisper name mapping, on tiny synthetic files."""
import struct

import numpy as np
import pytest
import torch

from zlora.models.ctranslate2 import (CT2FormatError, load_ct2, parse_ct2, whisper_ct2_to_hf,
                                      whisper_dims)

# ---------------------------------------------------------------- a tiny model.bin writer
# Written from the format description independently of the reader: dtype ids 0 f32, 1 i8,
# 2 i16, 3 i32, 4 f16, 5 bf16; strings are u16 length (counting a NUL) + bytes + NUL.
TYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4,
            torch.bfloat16: 5}


def enc_str(s: str) -> bytes:
    raw = s.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def enc_var(name: str, t: torch.Tensor) -> bytes:
    if t.dtype == torch.bfloat16:
        data = t.contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    else:
        data = t.contiguous().numpy().tobytes()
    out = enc_str(name) + struct.pack("<B", t.dim()) + b"".join(struct.pack("<I", d) for d in t.shape)
    return out + struct.pack("<B", TYPE_IDS[t.dtype]) + struct.pack("<I", len(data)) + data


def write_model_bin(variables: dict, aliases: dict | None = None, version: int = 6,
                    spec: str = "TestSpec", revision: int = 3) -> bytes:
    aliases = aliases or {}
    out = struct.pack("<I", version) + enc_str(spec) + struct.pack("<I", revision)
    out += struct.pack("<I", len(variables)) + b"".join(enc_var(n, t) for n, t in variables.items())
    out += struct.pack("<I", len(aliases)) + b"".join(enc_str(a) + enc_str(t) for a, t in aliases.items())
    return out


def sample_variables() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "enc/w_f32": torch.randn(3, 4, generator=g),
        "enc/w_f16": torch.randn(2, 5, 3, generator=g).half(),
        "enc/w_bf16": torch.randn(7, generator=g).bfloat16(),
        "enc/i8": torch.tensor([-128, 0, 5, 127], dtype=torch.int8),
        "enc/i16": torch.tensor([[-300, 2], [7, 32767]], dtype=torch.int16),
        "enc/i32": torch.tensor([2**31 - 1, -(2**31), 1], dtype=torch.int32),
        "enc/num_heads": torch.tensor(8, dtype=torch.int16),  # rank-0 scalar
        "dec/embeddings/wéight·ü": torch.randn(4, 2, generator=g),  # non-ASCII UTF-8 name
        "dec/empty": torch.zeros(0, 3),
    }


def test_roundtrip_all_dtypes_scalars_aliases_and_strings(tmp_path):
    variables = sample_variables()
    path = tmp_path / "model.bin"
    path.write_bytes(write_model_bin(variables, {"dec/proj": "dec/embeddings/wéight·ü"}, spec="WhisperSpec"))
    m = load_ct2(path)
    assert (m.binary_version, m.spec_name, m.spec_revision) == (6, "WhisperSpec", 3)
    assert list(m.variables) == list(variables)
    for name, t in variables.items():
        assert m.variables[name].dtype == t.dtype, name
        assert m.variables[name].shape == t.shape, name
        assert torch.equal(m.variables[name], t), name
    assert m.variables["enc/num_heads"].dim() == 0 and m["enc/num_heads"].item() == 8
    assert m.resolve("dec/proj") == "dec/embeddings/wéight·ü"
    assert torch.equal(m["dec/proj"], variables["dec/embeddings/wéight·ü"])
    assert "dec/proj" in m and "nope" not in m


@pytest.mark.parametrize("cut", [2, 9, 30, 60, -1])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    data = write_model_bin(sample_variables(), {"a": "enc/i8"})
    path = tmp_path / "model.bin"
    path.write_bytes(data[:cut] if cut > 0 else data[:-1])
    with pytest.raises(CT2FormatError, match=r"truncated while reading .* at offset \d+") as e:
        load_ct2(path)
    assert str(path) in str(e.value)


def test_truncated_inside_a_tensor_names_the_variable():
    data = write_model_bin({"enc/big": torch.ones(100)})
    with pytest.raises(CT2FormatError, match=r"data of variable 0 'enc/big'"):
        parse_ct2(data[:-50], where="x.bin")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: struct.pack("<I", 5) + d[4:], "binary version 5 is not supported"),
    (lambda d: d + b"\0", "1 unexpected trailing bytes"),
])
def test_bad_header_or_tail(mutate, message):
    data = write_model_bin({"a": torch.ones(2)})
    with pytest.raises(CT2FormatError, match=message):
        parse_ct2(mutate(data))


def test_byte_count_mismatch_unknown_dtype_and_dangling_alias():
    good = enc_var("a", torch.ones(2))  # name(2+2) rank(1) dim(4) dtype(1) nbytes(4) data(8)
    header = struct.pack("<I", 6) + enc_str("S") + struct.pack("<II", 0, 1)
    wrong_count = good[:10] + struct.pack("<I", 7) + good[14:]
    with pytest.raises(CT2FormatError, match="declares 7 bytes but shape"):
        parse_ct2(header + wrong_count + struct.pack("<I", 0))
    bad_type = good[:9] + b"\x09" + good[10:]
    with pytest.raises(CT2FormatError, match="unknown dtype id 9"):
        parse_ct2(header + bad_type + struct.pack("<I", 0))
    with pytest.raises(CT2FormatError, match="alias 'p' points to missing variable 'q'"):
        parse_ct2(write_model_bin({"a": torch.ones(2)}, {"p": "q"}))


def test_string_without_nul_is_rejected():
    data = bytearray(write_model_bin({"ab": torch.ones(1)}, spec="S"))
    data[4 + 2 + 1] = ord("x")  # spec string "S\0" -> "Sx"
    with pytest.raises(CT2FormatError, match="spec name .* not NUL-terminated"):
        parse_ct2(bytes(data))


# ---------------------------------------------------------------- Whisper mapping


def tiny_hf_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                        decoder_ffn_dim=24, num_mel_bins=8, max_source_positions=10,
                        max_target_positions=12, decoder_start_token_id=1, pad_token_id=0,
                        bos_token_id=0, eos_token_id=0, begin_suppress_tokens=None, suppress_tokens=None)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random, non-trivial biases and norms so a swapped tensor is visible
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.normal_(0, 0.5)
    return model


def _lin(prefix, mod, out):
    out[f"{prefix}/weight"] = mod.weight
    if mod.bias is not None:
        out[f"{prefix}/bias"] = mod.bias


def _ln(prefix, mod, out):
    out[f"{prefix}/gamma"], out[f"{prefix}/beta"] = mod.weight, mod.bias


def _fused(prefix, mods, out):
    """Rows stacked q|k|v (or k|v); HF's k_proj has no bias, CT2 stores zeros there."""
    out[f"{prefix}/weight"] = torch.cat([m.weight for m in mods])
    out[f"{prefix}/bias"] = torch.cat([m.bias if m.bias is not None else torch.zeros(m.out_features)
                                       for m in mods])


def ct2_variables_from_hf(model) -> dict:
    """The WhisperSpec variables CTranslate2 would store for ``model`` (per the format facts)."""
    v = {}
    enc, dec = model.model.encoder, model.model.decoder
    _lin("encoder/conv1", enc.conv1, v)
    _lin("encoder/conv2", enc.conv2, v)
    v["encoder/position_encodings/encodings"] = enc.embed_positions.weight
    _ln("encoder/layer_norm", enc.layer_norm, v)
    for i, layer in enumerate(enc.layers):
        p = f"encoder/layer_{i}"
        a = layer.self_attn
        _fused(f"{p}/self_attention/linear_0", [a.q_proj, a.k_proj, a.v_proj], v)
        _lin(f"{p}/self_attention/linear_1", a.out_proj, v)
        _ln(f"{p}/self_attention/layer_norm", layer.self_attn_layer_norm, v)
        _lin(f"{p}/ffn/linear_0", layer.fc1, v)
        _lin(f"{p}/ffn/linear_1", layer.fc2, v)
        _ln(f"{p}/ffn/layer_norm", layer.final_layer_norm, v)
    v["encoder/num_heads"] = torch.tensor(2, dtype=torch.int16)
    v["decoder/embeddings/weight"] = dec.embed_tokens.weight
    v["decoder/position_encodings/encodings"] = dec.embed_positions.weight
    _ln("decoder/layer_norm", dec.layer_norm, v)
    for i, layer in enumerate(dec.layers):
        p = f"decoder/layer_{i}"
        a, c = layer.self_attn, layer.encoder_attn
        _fused(f"{p}/self_attention/linear_0", [a.q_proj, a.k_proj, a.v_proj], v)
        _lin(f"{p}/self_attention/linear_1", a.out_proj, v)
        _ln(f"{p}/self_attention/layer_norm", layer.self_attn_layer_norm, v)
        _lin(f"{p}/attention/linear_0", c.q_proj, v)
        _fused(f"{p}/attention/linear_1", [c.k_proj, c.v_proj], v)
        _lin(f"{p}/attention/linear_2", c.out_proj, v)
        _ln(f"{p}/attention/layer_norm", layer.encoder_attn_layer_norm, v)
        _lin(f"{p}/ffn/linear_0", layer.fc1, v)
        _lin(f"{p}/ffn/linear_1", layer.fc2, v)
        _ln(f"{p}/ffn/layer_norm", layer.final_layer_norm, v)
    v["decoder/num_heads"] = torch.tensor(2, dtype=torch.int16)
    for name, val in [("activation", 3), ("pre_norm", 1), ("alibi", 0), ("scale_embeddings", 0),
                      ("start_from_zero_embedding", 0), ("alignment_layer", -1)]:
        v[f"decoder/{name}"] = torch.tensor(val, dtype=torch.int8 if val >= 0 else torch.int16)
    return {k: t.detach().half() if t.is_floating_point() else t for k, t in v.items()}


def tiny_ct2_whisper():
    model = tiny_hf_whisper()
    data = write_model_bin(ct2_variables_from_hf(model),
                           {"decoder/projection/weight": "decoder/embeddings/weight"}, spec="WhisperSpec")
    return model, parse_ct2(data)


def test_whisper_mapping_reproduces_the_model():
    from zlora.models.pretrained import whisper_from_ct2

    ref, ct2 = tiny_ct2_whisper()
    dims = whisper_dims(ct2)
    assert dims == dict(d_model=16, num_mel_bins=8, vocab_size=40, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                        decoder_ffn_dim=24, max_source_positions=10, max_target_positions=12)
    converted = whisper_from_ct2(ct2, sot_id=1, eot_id=0)
    with torch.no_grad():  # compare with the reference rounded to f16, as stored
        for p in ref.parameters():
            p.copy_(p.half().float())
        mel = torch.randn(2, 8, 20)
        dec_in = torch.tensor([[1, 5, 7], [1, 9, 3]])
        want = ref(input_features=mel, decoder_input_ids=dec_in).logits
        got = converted(input_features=mel, decoder_input_ids=dec_in).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()


def test_whisper_mapping_rejects_what_it_cannot_represent():
    ref, ct2 = tiny_ct2_whisper()
    name = "encoder/layer_0/self_attention/linear_0/bias"
    ct2.variables[name] = ct2.variables[name].clone()
    ct2.variables[name][16] = 1.0  # inside the k part (rows 16..31)
    with pytest.raises(CT2FormatError, match="key bias is not zero"):
        whisper_ct2_to_hf(ct2)
    _, ct2 = tiny_ct2_whisper()
    ct2.variables["decoder/activation"] = torch.tensor(1, dtype=torch.int8)
    with pytest.raises(CT2FormatError, match="decoder/activation = 1"):
        whisper_ct2_to_hf(ct2)
    _, ct2 = tiny_ct2_whisper()
    ct2.variables["encoder/layer_0/mystery/weight"] = torch.ones(1)
    with pytest.raises(CT2FormatError, match="unmapped Whisper variable 'encoder/layer_0/mystery/weight'"):
        whisper_ct2_to_hf(ct2)
    _, ct2 = tiny_ct2_whisper()
    del ct2.variables["encoder/conv1/weight"]
    with pytest.raises(CT2FormatError, match="not a Whisper model"):
        whisper_dims(ct2)


def test_float16_values_survive_exactly():
    x = torch.tensor(np.array([65504.0, -0.000061035156, 1 / 3], dtype=np.float16))
    m = parse_ct2(write_model_bin({"x": x}))
    assert torch.equal(m["x"], x)
