import pytest
import torch

from unclip.clip import Tokenizer, byte_tokenizer, shapes_tokenizer, train_bpe
from unclip.clip.tokenizer import BOS, EOS, PAD, make_tokenizer


def test_framing_bos_eot_and_padding():
    tok = byte_tokenizer(12)
    ids, mask = tok(["ab", "abcd"])
    bos, eos, pad = tok.hf.token_to_id(BOS), tok.hf.token_to_id(EOS), tok.hf.token_to_id(PAD)
    assert ids[0, :4].tolist() == [bos, tok.hf.token_to_id("a"), tok.hf.token_to_id("b"), eos]
    assert ids[0, 4:].tolist() == [pad] * 8
    assert mask.sum(1).tolist() == [4, 6]


def test_any_text_round_trips_and_is_lower_cased():
    tok = shapes_tokenizer(1024, 64)
    text = "Zebra-crossing ✓ at 12:30, naïve café!"
    ids = tok.tokenize([text])[0]
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == text.lower()


def test_shapes_bpe_is_compact_and_deterministic():
    tok = shapes_tokenizer(1024, 64)
    from unclip.clip.tokenizer import shapes_corpus

    again = train_bpe(shapes_corpus(), 1024, 64)
    assert again == tok
    caption = "A photo of a small turquoise triangle to the left of a red hexagon on a black background"
    assert len(tok.tokenize([caption])[0]) <= 22  # about one token per word, not one per byte


def test_truncation_keeps_eot_last_and_warns():
    tok = byte_tokenizer(8)
    with pytest.warns(UserWarning, match="truncated"):
        seq = tok.tokenize(["abcdefghij"])[0]
    assert len(seq) == 8 and seq[-1] == tok.eos_id and tok.decode(seq) == "abcdef"


def test_save_and_load(tmp_path):
    tok = byte_tokenizer(16)
    tok.save(tmp_path)
    loaded = Tokenizer.load(tmp_path, tok.settings())
    assert loaded == tok
    torch.testing.assert_close(loaded(["hello"])[0], tok(["hello"])[0])


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer 'words'"):
        make_tokenizer("words", 1024, 64)
    with pytest.raises(ValueError, match="vocab_size >= 259"):
        train_bpe(["a"], 100, 16)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizers file"):
        Tokenizer.load(tmp_path, {"context_length": 8})
