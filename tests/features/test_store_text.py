"""Text in a feature store: the hashed encoders are its text encoders; the refusal of
tfidf (which learns from the training folds) names them."""

import pytest

from mmfuse import InputError
from mmfuse.features import extract_store, load


@pytest.fixture
def text_manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("text,label\nred apple pie,a\nblue sky,b\nred wine,a\nblue sea,b\n")
    return path


def test_tfidf_refusal_names_the_store_text_encoders(text_manifest, tmp_path):
    for name in ("tfidf", "tfidf-hashed"):
        with pytest.raises(InputError) as err:
            extract_store(text_manifest, {"text": "text"}, tmp_path / "s",
                          encoders={"text": name})
        message = str(err.value)
        assert "\n" not in message and f"encoder {name!r} learns from data" in message
        listed = message.split("the store's text encoders are ")[1].split(" (")[0].split(" or ")
        assert {"hashing", "minilm", "wordllama"} <= set(listed)
        assert not {"tfidf", "tfidf-hashed"} & set(listed)
        assert "TF-IDF's hashed word and character n-grams" in message
    with pytest.raises(InputError, match=r"--encoders text=hashing/minilm/.*wordllama \(the "
                                         r"default, tfidf, learns from data"):
        extract_store(text_manifest, {"text": "text"}, tmp_path / "s")


def test_hashing_text_goes_into_a_store(text_manifest, tmp_path):
    extract_store(text_manifest, {"text": "text"}, tmp_path / "s", encoders={"text": "hashing"})
    store = load(tmp_path / "s")
    assert store.encoders == {"text": "hashing"} and store.views["text"].shape[0] == 4
