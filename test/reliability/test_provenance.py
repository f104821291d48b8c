"""Provenance (issue 22): every reusable output records what produced it, and reuse needs a match;
otherwise the work is redone, or refused with a message naming both fingerprints and the file.
Decode parts and merges, encoder caches, LID files, tokenizers and EXP/final/ are covered here."""
import json
import shutil

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from rel_testlib import decode_inprocess, error_line, rewrite_tensors, run_cli, stage2_final
from train_testlib import TINY_WHISPER, single_process_env, train_config, write_config

from zlora.bin.dump_encoder import main as dump_encoder_main
from zlora.bin.extract_lid import main as extract_lid_main
from zlora.bin.train import main as train_main
from zlora.bin.train_tokenizer import main as train_tokenizer_main


def private_feats(tmp_path, corpus, name="dump", scale=1.0):
    """A private copy of the corpus features (a feats.scp plus its ark) that a test may rewrite."""
    _, feats, _ = corpus
    src = kaldiio.load_scp(str(feats))
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{out / 'feats.ark'},{out / 'feats.scp'}") as w:
        for utt in sorted(src):
            w(utt, (src[utt] * scale).astype(np.float32))
    return out / "feats.scp"


def done_record(out):
    return json.loads((out / ".done").read_text())


# ---- decoding ----------------------------------------------------------------------------------------
def test_a_finished_decode_dir_is_redone_for_another_model_features_or_options(tmp_path, exp_copy, corpus,
                                                                                monkeypatch):
    exp, _ = exp_copy
    data, _, _ = corpus
    feats = private_feats(tmp_path, corpus)
    out = tmp_path / "dec"
    common = ["--exp", exp, "--data", data, "--feats", feats, "--decoding.max_new_tokens"]

    def fresh(name, tokens):
        code, err = decode_inprocess(monkeypatch, [*common, tokens, "--out", tmp_path / name])
        assert code == 0, err
        return (tmp_path / name / "text").read_text()

    code, err = decode_inprocess(monkeypatch, [*common, 3, "--out", out])
    assert code == 0, err
    first = done_record(out)
    code, err = decode_inprocess(monkeypatch, [*common, 3, "--out", out])      # same inputs: kept
    assert code == 0 and "nothing to do" in err, err
    # other decoding options
    code, err = decode_inprocess(monkeypatch, [*common, 1, "--out", out])
    assert code == 0 and "nothing to do" not in err and "redoing" in err, err
    assert (out / "text").read_text() == fresh("opt", 1)
    assert done_record(out)["options"] != first["options"]
    # other model weights behind the same EXP/final path
    rewrite_tensors(exp / "final" / "model.safetensors",
                    lambda t: t.update({k: v + 0.5 for k, v in t.items() if k.startswith("projector.")}))
    code, err = decode_inprocess(monkeypatch, [*common, 1, "--out", out])
    assert code == 0 and "nothing to do" not in err and "model" in err, err
    assert (out / "text").read_text() == fresh("model", 1)
    assert done_record(out)["model"] != first["model"]
    # features re-dumped behind the same feats.scp
    private_feats(tmp_path, corpus, scale=2.0)
    code, err = decode_inprocess(monkeypatch, [*common, 1, "--out", out])
    assert code == 0 and "nothing to do" not in err and "feats" in err, err
    assert (out / "text").read_text() == fresh("feats", 1)
    assert done_record(out)["feats"] != first["feats"]
    assert done_record(out / "split1" / "1")["feats"] == done_record(out)["feats"]


def test_parts_decoded_with_other_inputs_are_never_merged(tmp_path):
    from zlora.decode.jobs import merge_parts, split_utts, write_part

    utts = [(f"a{i}", 100) for i in range(4)]
    for p in split_utts(utts, 2, tmp_path, {"model": "m1"}):
        write_part(p, {u: "old" for u in p.utts}, {"utts": len(p.utts), "audio_seconds": 1.0, "decode_seconds": 1.0})
    new = split_utts(utts, 2, tmp_path, {"model": "m2"})        # same utterances, another model
    assert not any(p.done for p in new)
    with pytest.raises(RuntimeError, match="not finished"):
        merge_parts(new, tmp_path)


# ---- EXP/final: language list, adapter kind and ranks, tokenizer ---------------------------------------
def test_final_config_that_disagrees_with_the_weights_is_refused(tmp_path, trained, corpus, monkeypatch):
    from safetensors.torch import save_file

    from zlora.train.trained import CheckpointError, load_model_for_inference

    lid = tmp_path / "lid.safetensors"
    save_file({"en": torch.randn(8), "fr": torch.randn(8)}, str(lid))
    exp = stage2_final(trained, tmp_path, "soft", kind="zipper-soft", rank=2, lid_embeddings=str(lid))
    load_model_for_inference(exp)                       # as written: loads
    cfg_path = exp / "final" / "config.yaml"
    original = cfg_path.read_text()
    cfg = yaml.safe_load(original)
    cfg["languages"] = cfg["adapter"]["languages"] = ["fr", "en"]     # order = language-specific weights
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(CheckpointError, match=r"model.safetensors.*languages \['en', 'fr'\].*"
                                              r"config.yaml.*\['fr', 'en'\]"):
        load_model_for_inference(exp)
    data, feats, _ = corpus
    code, err = decode_inprocess(monkeypatch, ["--exp", exp, "--data", data, "--feats", feats,
                                               "--out", tmp_path / "d"])
    assert code == 2 and "languages" in error_line(err) and not (tmp_path / "d" / "text").exists()
    cfg = yaml.safe_load(original)
    cfg["adapter"]["alpha"] = 8.0                                     # scaling alpha/r changes silently
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(CheckpointError, match=r"adapter.alpha.*4.0.*8.0"):
        load_model_for_inference(exp)


def test_non_finite_weights_are_an_error_naming_the_tensor_and_the_file(tmp_path, exp_copy, corpus):
    from zlora.bin.decode import main as decode_main

    exp, _ = exp_copy
    weights = exp / "final" / "model.safetensors"
    victim = {}

    def poison(t):
        victim["name"] = name = sorted(k for k in t if k.startswith("projector."))[0]
        t[name].view(-1)[0] = float("nan")

    rewrite_tensors(weights, poison)
    data, feats, _ = corpus
    code, err = run_cli(decode_main, ["--exp", exp, "--data", data, "--feats", feats, "--out", tmp_path / "d"])
    assert code == 2
    line = error_line(err)
    assert str(weights) in line and victim["name"] in line and "NaN" in line, line
    assert not (tmp_path / "d" / "text").exists()


def swap_two_pieces(model_file):
    """Rewrite a sentencepiece model with two pieces swapped: same vocabulary size, other ids."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(open(model_file, "rb").read())
    normal = [p for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL]
    normal[0].piece, normal[1].piece = normal[1].piece, normal[0].piece
    open(model_file, "wb").write(proto.SerializeToString())


def test_a_tokenizer_that_changed_since_training_is_refused(tmp_path, exp_copy, corpus, monkeypatch):
    exp, _ = exp_copy
    data, feats, sp = corpus
    tok = tmp_path / "tok.model"
    shutil.copy(sp, tok)
    cfg_path = exp / "final" / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace(str(sp), str(tok)))
    args = ["--exp", exp, "--data", data, "--feats", feats, "--decoding.max_new_tokens", 2]
    code, err = decode_inprocess(monkeypatch, [*args, "--out", tmp_path / "a"])    # same content: fine
    assert code == 0, err
    swap_two_pieces(tok)
    code, err = decode_inprocess(monkeypatch, [*args, "--out", tmp_path / "b"])
    assert code == 2, err
    line = error_line(err)
    assert str(tok) in line and "tokenizer" in line and "sha256" in line, line


def test_train_tokenizer_keeps_an_up_to_date_model_and_redoes_a_stale_one(tmp_path, corpus, capsys):
    data, _, _ = corpus
    text = tmp_path / "text"
    shutil.copy(data / "text", text)
    args = ["--text", text, "--vocab_size", 60, "--out", tmp_path / "bpe", "--languages", "en,fr"]
    assert run_cli(train_tokenizer_main, args)[0] == 0
    model = tmp_path / "bpe.model"
    stamp = model.stat().st_mtime_ns
    code, err = run_cli(train_tokenizer_main, args)
    assert code == 0 and "up to date" in err and model.stat().st_mtime_ns == stamp, err
    with open(text, "a") as f:
        f.write("zz-extra-001 one two three four\n")
    code, err = run_cli(train_tokenizer_main, args)
    assert code == 0 and "up to date" not in err and model.stat().st_mtime_ns != stamp, err
    code, err = run_cli(train_tokenizer_main, [*args[:-1], "en"])        # other options: redone too
    assert code == 0 and "up to date" not in err, err


# ---- encoder caches ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def whisper_caches(tmp_path_factory, corpus):
    """A tiny Whisper dir and two caches of the corpus: after 1 layer (enc1) and after 2 (enc2)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    root = tmp_path_factory.mktemp("caches")
    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)).save_pretrained(root / "whisper")
    _, feats, _ = corpus
    code, err = run_cli(dump_encoder_main, ["--whisper_dir", root / "whisper", "--feats", feats, "--layers", 1, 2,
                                            "--out", root / "enc1", root / "enc2"])
    assert code == 0, err
    return root


def cached_run(tmp_path, corpus, whisper_caches, train_feats, name="exp"):
    data, _, sp = corpus
    cfg = train_config(tmp_path / name, data, train_feats, sp, **{"optim.max_steps": 1})
    cfg["model"]["encoder"] = {"whisper_dir": str(whisper_caches / "whisper"), "cached_layers": 1}
    return cfg


def train_cli(monkeypatch, tmp_path, cfg):
    single_process_env(monkeypatch)
    return run_cli(train_main, ["--config", write_config(tmp_path / "c.yaml", cfg)])


def test_a_cache_or_features_that_do_not_fit_a_cached_layer_model_are_refused(tmp_path, corpus, whisper_caches,
                                                                                monkeypatch):
    _, feats, _ = corpus
    enc2 = whisper_caches / "enc2" / "feats.scp"
    code, err = train_cli(monkeypatch, tmp_path, cached_run(tmp_path, corpus, whisper_caches, enc2))
    assert code == 2, err
    line = error_line(err)
    assert str(whisper_caches / "enc2" / "meta.yaml") in line and "2 layers" in line and "cached_layers" in line
    code, err = train_cli(monkeypatch, tmp_path, cached_run(tmp_path, corpus, whisper_caches, feats))
    assert code == 2, err
    line = error_line(err)
    assert str(feats) in line and "log-mel" in line and "dump_encoder" in line, line
    assert not (tmp_path / "exp" / "checkpoints").exists()
    # the right cache trains; decoding it from log-mel features is refused the same way
    enc1 = whisper_caches / "enc1" / "feats.scp"
    code, err = train_cli(monkeypatch, tmp_path, cached_run(tmp_path, corpus, whisper_caches, enc1))
    assert code == 0, err
    data = corpus[0]
    code, err = decode_inprocess(monkeypatch, ["--exp", tmp_path / "exp", "--data", data, "--feats", feats,
                                               "--out", tmp_path / "d", "--decoding.max_new_tokens", 2])
    assert code == 2 and str(feats) in error_line(err) and "log-mel" in error_line(err), err
    code, err = decode_inprocess(monkeypatch, ["--exp", tmp_path / "exp", "--data", data, "--feats", enc1,
                                               "--out", tmp_path / "d", "--decoding.max_new_tokens", 2])
    assert code == 0, err


def test_an_encoder_cache_is_redone_when_the_weights_behind_its_paths_change(tmp_path, corpus, whisper_caches):
    from safetensors.torch import save_file

    _, feats, _ = corpus
    whisper = tmp_path / "whisper"
    shutil.copytree(whisper_caches / "whisper", whisper)
    state = tmp_path / "s1.safetensors"
    save_file({"encoder.conv1.bias": torch.ones(32)}, str(state))
    out = tmp_path / "enc1"
    args = ["--whisper_dir", whisper, "--feats", feats, "--layers", 1, "--out", out, "--encoder_state", state]
    assert run_cli(dump_encoder_main, args)[0] == 0
    before = kaldiio.load_scp(str(out / "feats.scp"))
    first = {u: before[u].copy() for u in before}
    code, err = run_cli(dump_encoder_main, args)
    assert code == 0 and "nothing to do" in err, err
    save_file({"encoder.conv1.bias": torch.full((32,), 2.0)}, str(state))     # same path, new weights
    code, err = run_cli(dump_encoder_main, args)
    assert code == 0 and "nothing to do" not in err, err
    after = kaldiio.load_scp(str(out / "feats.scp"))
    assert any(not np.allclose(first[u], after[u]) for u in first)
    # the Whisper weights rewritten in place
    rewrite_tensors(whisper / "model.safetensors",
                    lambda t: t.update({k: v * 1.5 for k, v in t.items() if "encoder.layers.0.fc1.weight" in k}))
    code, err = run_cli(dump_encoder_main, args)
    assert code == 0 and "nothing to do" not in err, err


# ---- LID embeddings ------------------------------------------------------------------------------------------
@pytest.fixture
def lid_whisper(tmp_path):
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(**{**TINY_WHISPER, "decoder_start_token_id": 50, "max_target_positions": 16})
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(decoder_start_token_id=50, eos_token_id=2, pad_token_id=0,
                                               lang_to_id={"<|en|>": 51, "<|fr|>": 52, "<|de|>": 53})
    model.save_pretrained(tmp_path / "whisper")
    return tmp_path / "whisper"


def test_lid_embeddings_are_kept_when_up_to_date_and_redone_when_whisper_changed(tmp_path, lid_whisper):
    from safetensors import safe_open

    out = tmp_path / "lid.safetensors"
    args = ["--whisper_dir", lid_whisper, "--languages", "en,fr", out]
    assert run_cli(extract_lid_main, args)[0] == 0
    stamp = out.stat().st_mtime_ns
    code, err = run_cli(extract_lid_main, args)
    assert code == 0 and "up to date" in err and out.stat().st_mtime_ns == stamp, err
    with safe_open(str(out), framework="pt") as f:
        first = json.loads(f.metadata()["provenance"])
    rewrite_tensors(lid_whisper / "model.safetensors",
                    lambda t: t.update({k: v + 1.0 for k, v in t.items() if k.endswith("embed_tokens.weight")}))
    code, err = run_cli(extract_lid_main, args)
    assert code == 0 and "up to date" not in err, err
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["provenance"])["whisper"] != first["whisper"]
