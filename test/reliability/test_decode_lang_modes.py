"""zlora.bin.decode --lang_mode end to end through the CLI: oracle and Whisper-LID posteriors
(given as --lid_posteriors) must decode exactly as known-language mode when they name the true
language; LID files are written; bad LID inputs are clear errors."""
import json

import zlora.bin.decode as decode_cli
from rel_testlib import run_cli


def _decode(monkeypatch, args):
    import torch

    threads = torch.get_num_threads()
    with monkeypatch.context() as m:       # parts decoded in this process (no spawn)
        m.setattr(decode_cli, "run_parts", lambda cfg, parts: [decode_cli.decode_part(cfg, p) for p in parts])
        out = run_cli(decode_cli.main, [str(a) for a in args])
    # decode_part restores the caller's thread count (a leaked count once made a later in-process
    # training run differ bitwise from a subprocess's)
    assert torch.get_num_threads() == threads
    return out


def _utt2lang(data):
    return dict(line.split() for line in (data / "utt2lang").read_text().splitlines())


def test_oracle_and_given_posteriors_equal_known_language_decoding(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    base = ["--exp", trained[0], "--data", data, "--feats", feats, "--nj", 2, "--decoding.max_new_tokens", 4]
    code, err = _decode(monkeypatch, [*base, "--out", tmp_path / "known"])
    assert code == 0, err
    known = (tmp_path / "known/text").read_text()
    assert not (tmp_path / "known/lid.json").exists()

    code, err = _decode(monkeypatch, [*base, "--out", tmp_path / "oracle", "--lang.mode", "oracle"])
    assert code == 0, err
    assert (tmp_path / "oracle/text").read_text() == known
    assert json.loads((tmp_path / "oracle/lid.json").read_text())["accuracy"] == 1.0

    truth = _utt2lang(data)
    post = tmp_path / "post.jsonl"
    post.write_text("".join(json.dumps({"utt": u, "posterior": {lang: 0.8, ("fr" if lang == "en" else "en"): 0.2}})
                            + "\n" for u, lang in truth.items()))
    out = tmp_path / "wlid"
    code, err = _decode(monkeypatch, [*base, "--out", out, "--lang.mode", "whisper_lid", "--lang.posteriors", post])
    assert code == 0, err
    assert (out / "text").read_text() == known
    assert dict(line.split() for line in (out / "utt2lang_pred").read_text().splitlines()) == truth
    written = [json.loads(x) for x in (out / "lid_posteriors.jsonl").read_text().splitlines()]
    assert len(written) == len(truth) and abs(written[0]["posterior"][truth[written[0]["utt"]]] - 0.8) < 1e-6


def test_wrong_detections_are_scored_in_lid_json(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    truth = _utt2lang(data)
    post = tmp_path / "post.jsonl"
    post.write_text("".join(json.dumps({"utt": u, "posterior": {"fr": 1.0}}) + "\n" for u in truth))
    code, err = _decode(monkeypatch, ["--exp", trained[0], "--data", data, "--feats", feats, "--decoding.max_new_tokens", 2,
                                      "--out", tmp_path / "o", "--lang.mode", "whisper_lid", "--lang.posteriors", post])
    assert code == 0, err
    rep = json.loads((tmp_path / "o/lid.json").read_text())
    assert rep["per_language"]["en"]["accuracy"] == 0.0 and rep["per_language"]["fr"]["accuracy"] == 1.0
    assert rep["accuracy"] == sum(v == "fr" for v in truth.values()) / len(truth)


def test_lid_input_errors(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    base = ["--exp", trained[0], "--data", data, "--feats", feats, "--decoding.max_new_tokens", 2]
    code, err = _decode(monkeypatch, [*base, "--out", tmp_path / "a", "--lang.mode", "whisper_lid"])
    assert code == 2 and "no Whisper dir" in err         # it would read the decode's own log-mel
    first = next(iter(_utt2lang(data)))
    post = tmp_path / "post.jsonl"
    post.write_text(json.dumps({"utt": first, "posterior": {"en": 1.0}}) + "\n")
    code, err = _decode(monkeypatch, [*base, "--out", tmp_path / "b", "--lang.mode", "whisper_lid", "--lang.posteriors", post])
    assert code == 2 and "no posterior for" in err
    assert not (tmp_path / "b/text").exists()
    post.write_text("".join(json.dumps({"utt": u, "posterior": {"th": 1.0}}) + "\n" for u in _utt2lang(data)))
    code, err = _decode(monkeypatch, [*base, "--out", tmp_path / "d", "--lang.mode", "whisper_lid", "--lang.posteriors", post])
    assert code == 2 and "no mass on the model's languages" in err
    post.write_text("not json\n")
    code, err = _decode(monkeypatch, [*base, "--out", tmp_path / "c", "--lang.mode", "whisper_lid", "--lang.posteriors", post])
    assert code == 2 and f"{post}:1" in err


def test_several_sets_in_one_process_decode_as_separate_calls(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    base = ["--exp", trained[0], "--decoding.max_new_tokens", 4]
    code, err = _decode(monkeypatch, [*base, "--data", data, "--feats", feats, "--out", tmp_path / "one"])
    assert code == 0, err
    two = [tmp_path / "a", tmp_path / "b"]
    code, err = _decode(monkeypatch, [*base, "--data", f"[{data}, {data}]", "--feats", f"[{feats}, {feats}]",
                                      "--out", f"[{two[0]}, {two[1]}]"])
    assert code == 0, err
    one = (tmp_path / "one/text").read_text()
    assert one and all((d / "text").read_text() == one for d in two)
    assert "data: " + str(data) in (two[1] / "decode.yaml").read_text()   # each set records its own config
    code, err = _decode(monkeypatch, [*base, "--data", f"[{data}, {data}]", "--feats", f"[{feats}]",
                                      "--out", f"[{two[0]}, {two[1]}]"])
    assert code != 0 and "same number of sets" in err and "got 2, 1 and 2" in err
    code, err = _decode(monkeypatch, [*base, "--data", f"[{data}, {data}]", "--feats", f"[{feats}, {feats}]",
                                      "--out", f"[{two[0]}, {two[0]}]"])
    assert code != 0 and "same dir" in err


def test_old_flat_option_names_still_work_with_a_deprecation_line(tmp_path, trained, corpus, monkeypatch):
    data, feats, _ = corpus
    common = ["--exp", trained[0], "--data", data, "--feats", feats]
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "new", "--decoding.max_new_tokens", 2,
                                      "--lang.mode", "oracle"])
    assert code == 0, err
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "old", "--max_new_tokens", 2,
                                      "--lang_mode", "oracle"])
    assert code == 0, err
    assert "--max_new_tokens is deprecated; use --decoding.max_new_tokens" in err
    assert "--lang_mode is deprecated; use --lang.mode" in err
    assert (tmp_path / "old" / "text").read_text() == (tmp_path / "new" / "text").read_text()
    # every DecodingOptions field is settable from the command line, and checked
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "bad", "--decoding.beam_size", 0])
    assert code == 2 and "beam_size must be >= 1" in err and not (tmp_path / "bad" / "text").exists()
    code, err = _decode(monkeypatch, [*common, "--out", tmp_path / "lp", "--decoding.length_penalty", 0.6,
                                      "--decoding.max_len_ratio", 2.0, "--decoding.max_new_tokens", 2])
    assert code == 0, err


def test_merged_llm_lora_decodes_like_the_unmerged_model(tmp_path, trained, corpus, monkeypatch):
    """--merge_lora (default) folds the LLM-LoRA into the weights: same hypotheses, and the merged
    LLM has no adapter layers left."""
    from zlora.adapters import named_adapter_layers
    from zlora.bin.decode import DecodeConfig, load_decoding_model

    data, feats, _ = corpus
    common = ["--exp", trained[0], "--data", data, "--feats", feats, "--decoding.max_new_tokens", 6]
    assert _decode(monkeypatch, [*common, "--out", tmp_path / "m"])[0] == 0
    assert _decode(monkeypatch, [*common, "--out", tmp_path / "u", "--merge_lora", "false"])[0] == 0
    assert (tmp_path / "m" / "text").read_text() == (tmp_path / "u" / "text").read_text()
    model = load_decoding_model(DecodeConfig(exp=str(trained[0]), data="d", feats="f", out="o"), "cpu")
    assert not named_adapter_layers(model.llm)
