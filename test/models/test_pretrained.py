"""Pretrained-weight plumbing without the real weights: package lookup, hashing, atomic builds."""
import base64
import hashlib
import sys

import pytest
import torch

from zlora.models import pretrained
from zlora.models.pretrained import MANIFEST, build_atomically, cache_root, package_file
from zlora.utils.cli import UserError, run_main


def make_fake_dist(root, name="zlora_fake_weights", payload=b"weights", record_payload=None):
    """A minimal installed distribution (dist-info with RECORD) under ``root``."""
    (root / name / "data").mkdir(parents=True)
    (root / name / "data" / "w.bin").write_bytes(payload)
    digest = base64.urlsafe_b64encode(hashlib.sha256(record_payload or payload).digest()).rstrip(b"=").decode()
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{name}/data/w.bin,sha256={digest},{len(payload)}\n"
                                 f"{name}-1.0.dist-info/RECORD,,\n")
    return name



@pytest.fixture
def keep_logging():
    """CLIs call setup_logging, which binds the (captured) stderr; restore the handlers after."""
    import logging

    logger = logging.getLogger("zlora")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])

def test_package_file_checks_the_record_hash(tmp_path, monkeypatch):
    good = make_fake_dist(tmp_path / "a", "zlora_fake_good")
    bad = make_fake_dist(tmp_path / "b", "zlora_fake_bad", payload=b"tampered", record_payload=b"weights")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "a"), str(tmp_path / "b")] + sys.path)
    path = package_file(good, "data/w.bin")
    assert path.read_bytes() == b"weights"
    with pytest.raises(UserError, match="does not match the sha256 in its RECORD"):
        package_file(bad, "data/w.bin")
    assert package_file(bad, "data/w.bin", verify=False).read_bytes() == b"tampered"
    with pytest.raises(UserError, match="expected one file ending in 'nope.bin', found 0"):
        package_file(good, "nope.bin")


def test_missing_package_names_the_install_command():
    with pytest.raises(UserError, match=r"'zlora-no-such-pkg' is not installed: .*make install"):
        package_file("zlora-no-such-pkg", "x")


def test_cache_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ZLORA_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("ZLORA_CACHE")
    assert cache_root().name == ".cache"


def _writer(calls, fail=False):
    def convert(tmp):
        calls.append(tmp)
        (tmp / "a.txt").write_text("a")
        if fail:
            raise RuntimeError("boom")
        (tmp / "b.txt").write_text("b")
        return {"source": "test"}
    return convert


def test_build_is_atomic_idempotent_and_refuses_to_clobber(tmp_path):
    out = tmp_path / "out"
    calls = []
    with pytest.raises(RuntimeError, match="boom"):
        build_atomically(out, ("a.txt", "b.txt"), _writer(calls, fail=True), "test")
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial output, no temp dir

    build_atomically(out, ("a.txt", "b.txt"), _writer(calls), "test")
    assert sorted(p.name for p in out.iterdir()) == sorted(["a.txt", "b.txt", MANIFEST])
    assert len(calls) == 2 and (out.stat().st_mode & 0o777) != 0o700  # umask modes, not mkdtemp's
    build_atomically(out, ("a.txt", "b.txt"), _writer(calls), "test")
    assert len(calls) == 2  # complete: nothing redone

    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("stale")
    with pytest.raises(UserError, match="exists but is not a complete test conversion"):
        build_atomically(other, ("a.txt", "b.txt"), _writer(calls), "test")
    assert (other / "a.txt").read_text() == "stale"

    empty = tmp_path / "empty"
    empty.mkdir()
    build_atomically(empty, ("a.txt", "b.txt"), _writer(calls), "test")
    assert (empty / MANIFEST).is_file()


def test_build_fails_when_the_converter_forgets_a_file(tmp_path):
    with pytest.raises(UserError, match=r"did not produce \['c.txt'\]"):
        build_atomically(tmp_path / "o", ("a.txt", "c.txt"), _writer([]), "test")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("module", ["convert_whisper", "convert_llm"])
def test_cli_refuses_an_incomplete_out_dir(tmp_path, capsys, keep_logging, module):
    import importlib

    main = importlib.import_module(f"zlora.bin.{module}").main
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(SystemExit) as e:
        run_main(main, [str(tmp_path)])
    assert e.value.code == 2
    assert f"{tmp_path} exists but is not a complete" in capsys.readouterr().err


def test_whisper_hash_mismatch_is_an_error(monkeypatch, tmp_path):
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    p1.write_bytes(b"abc")
    p2.write_bytes(b"def")
    monkeypatch.setattr(pretrained, "package_file", lambda dist, name, verify=True: p1 if name.endswith("1") else p2)
    with pytest.raises(UserError, match=r"p1 \+ .*p2 has sha256 [0-9a-f]{64}, expected 905e5bf8"):
        pretrained.read_whisper_ct2()


# ---------------------------------------------------------------- GGUF -> Llama, on a tiny file


def llama_cpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (what the converter must undo)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path, quantize_up=False):
    """A tiny HF Llama written as llama.cpp would (names, q/k permutation), plus the reference."""
    gguf = pytest.importorskip("gguf")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    ref = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "norm" in n:
                p.normal_(1, 0.2)
    w = gguf.GGUFWriter(str(path), "llama")
    for fn, v in [(w.add_block_count, 2), (w.add_context_length, 64), (w.add_embedding_length, 32),
                  (w.add_feed_forward_length, 64), (w.add_head_count, 4), (w.add_head_count_kv, 2),
                  (w.add_layer_norm_rms_eps, 1e-5), (w.add_rope_freq_base, 5000.0), (w.add_vocab_size, 32),
                  (w.add_bos_token_id, 1), (w.add_eos_token_id, 2)]:
        fn(v)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for hf, t in ref.state_dict().items():
        if hf == "lm_head.weight":
            continue
        if hf not in names:
            _, _, i, *mod, leaf = hf.split(".")
            names[hf] = f"blk.{i}.{layer['.'.join(mod)]}.{leaf}"
        arr = t.numpy()
        if "q_proj" in hf:
            arr = llama_cpp_permute(arr, 4)
        elif "k_proj" in hf:
            arr = llama_cpp_permute(arr, 2)
        if quantize_up and "up_proj" in hf:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(names[hf], gguf.quantize(arr, q8), raw_dtype=q8)
        else:
            w.add_tensor(names[hf], arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref


def test_gguf_llama_conversion_reproduces_the_model(tmp_path):
    ref = write_tiny_llama_gguf(tmp_path / "tiny.gguf", quantize_up=True)
    model = pretrained._dequantised_llama(tmp_path / "tiny.gguf")
    assert model.config.num_key_value_heads == 2 and model.config.tie_word_embeddings
    assert model.config.rope_parameters["rope_theta"] == 5000.0
    got, want = model.state_dict(), ref.state_dict()
    for k, v in want.items():
        tol = 2e-2 if "up_proj" in k else 1e-2  # bf16 storage; Q8_0 blocks for up_proj
        torch.testing.assert_close(got[k].float(), v, atol=tol, rtol=tol, msg=k)
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model.float()(ids).logits, ref(ids).logits, atol=0.1, rtol=0.05)


def test_gguf_errors_name_the_file(tmp_path):
    write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    data = (tmp_path / "tiny.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:200])
    with pytest.raises(UserError, match=r"cut.gguf: malformed GGUF header near byte \d+"):
        pretrained.GGUFFile(tmp_path / "cut.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGML" + data[4:])
    with pytest.raises(UserError, match="bad.gguf: not a GGUF file"):
        pretrained.GGUFFile(tmp_path / "bad.gguf")
    short = tmp_path / "short.gguf"
    short.write_bytes(data[:-64])
    g = pretrained.GGUFFile(short)
    with pytest.raises(UserError, match="does not fit the file"):
        for name in g.tensors:
            g.tensor(name)
