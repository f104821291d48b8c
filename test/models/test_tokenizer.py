"""Sentencepiece training (prompts in the corpus), the tokenizer protocol, train_tokenizer CLI."""
import pytest

from zlora.models.prompts import load_prompts
from zlora.models.tokenizer import SentencePieceTokenizer, train_sentencepiece
from zlora.utils.cli import UserError

REQUIRED = "en fr de es it ru vi th ar ja ko pt zh".split()


def test_prompts_cover_the_paper_languages_in_native_script():
    prompts = load_prompts()
    assert set(REQUIRED) <= set(prompts)
    assert len(set(prompts.values())) == len(prompts)                 # no copy-pasted fallbacks
    script = {"ru": (0x0400, 0x04FF), "th": (0x0E00, 0x0E7F), "ar": (0x0600, 0x06FF),
              "ko": (0xAC00, 0xD7AF), "ja": (0x3040, 0x30FF), "zh": (0x4E00, 0x9FFF)}
    for lang, (lo, hi) in script.items():
        assert any(lo <= ord(c) <= hi for c in prompts[lang]), lang
    assert prompts["en"] == "Please transcribe the audio content into text."


def test_sentencepiece_contains_the_prompts_and_round_trips(tmp_path):
    (tmp_path / "text").write_text("u1 one two three\nu2 un deux trois\n", encoding="utf-8")
    tok = train_sentencepiece([tmp_path / "text"], tmp_path / "sp", 300)
    assert (tok.pad_id, tok.eos_id) == (0, 2)
    unk = tok.sp.unk_id()
    for lang, text in load_prompts().items():
        ids = tok.encode(text)
        assert unk not in ids, lang
        assert tok.decode(ids) == text
    assert tok.decode(tok.encode("un deux") + [tok.eos_id, tok.pad_id]) == "un deux"
    again = SentencePieceTokenizer(tmp_path / "sp.model")
    assert again.vocab_size == tok.vocab_size


def test_errors_name_the_problem(tmp_path):
    (tmp_path / "text").write_text("u1 one\n", encoding="utf-8")
    with pytest.raises(UserError, match="sentencepiece training .* failed.*vocab"):
        train_sentencepiece([tmp_path / "text"], tmp_path / "sp", 20)        # < characters needed
    (tmp_path / "bad").write_bytes(b"u1 \xff\xfe\n")
    with pytest.raises(UserError, match="not UTF-8"):
        train_sentencepiece([tmp_path / "bad"], tmp_path / "sp", 100)
    assert not (tmp_path / "sp.model").exists()


def test_train_tokenizer_cli(tmp_path, capsys):
    from zlora.bin.train_tokenizer import main
    from zlora.utils.cli import run_main

    (tmp_path / "text").write_text("u1 hello world\nu2 bonjour le monde\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        run_main(main, ["--text", str(tmp_path / "text"), "--vocab_size", "120",
                        "--out", str(tmp_path / "lang" / "bpe"), "--languages", "en,fr"])
    assert e.value.code == 0
    tok = SentencePieceTokenizer(tmp_path / "lang" / "bpe.model")
    assert tok.decode(tok.encode(load_prompts()["fr"])) == load_prompts()["fr"]
    with pytest.raises(SystemExit) as e:
        run_main(main, ["--text", str(tmp_path / "nope"), "--vocab_size", "120", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_main(main, ["--text", str(tmp_path / "text"), "--vocab_size", "120", "--out",
                        str(tmp_path / "x"), "--languages", "en,xx"])
    assert e.value.code == 2 and "no prompt for language(s) xx" in capsys.readouterr().err


def test_prompt_symbols_make_each_tag_prompt_one_piece(tmp_path):
    (tmp_path / "text").write_text("u1 one two three\nu2 un deux trois\n", encoding="utf-8")
    (tmp_path / "tags.yaml").write_text('prompts: {en: "<|en|>", fr: "<|fr|>"}\n', encoding="utf-8")
    tok = train_sentencepiece([tmp_path / "text"], tmp_path / "sp", 300, prompts_file=str(tmp_path / "tags.yaml"),
                              prompt_symbols=True)
    for tag in ("<|en|>", "<|fr|>"):
        pieces = tok.sp.encode(tag, out_type=str)
        assert tag in pieces and len(pieces) <= 2, pieces        # the tag (after sentencepiece's "▁")
        assert tok.decode(tok.encode(tag)) == tag
    plain = train_sentencepiece([tmp_path / "text"], tmp_path / "sp2", 300, prompts_file=str(tmp_path / "tags.yaml"))
    assert len(plain.sp.encode("<|en|>")) > 2                      # without the option: characters


def test_prompt_symbols_refuse_prompts_with_spaces(tmp_path):
    (tmp_path / "text").write_text("u1 one two\n", encoding="utf-8")
    with pytest.raises(UserError, match="prompt for 'en'.*whitespace"):
        train_sentencepiece([tmp_path / "text"], tmp_path / "sp", 100, languages=["en"], prompt_symbols=True)
    assert not (tmp_path / "sp.model").exists()
