"""The one featurizer: every path (fit, predict, predict_table, serving's per-item half,
evaluation's per-fold half) gives the same views."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import NumberEncoder, VocabEncoder, make_views, number_frame

from mmfuse import InputError, MultimodalClassifier
from mmfuse.encoders.base import MissingItem, is_missing
from mmfuse.encoders.featurizer import (PASSTHROUGH, Featurizer, Passthrough, is_passthrough,
                                        resolve_encoders)
from mmfuse.predict import encode


@pytest.fixture(scope="module")
def number_model():
    df, y = number_frame(n=120)
    model = MultimodalClassifier(encoders={"left": "test-number", "right": "test-vocab"},
                                 fusion="early", cv=3, random_state=0).fit(df, y)
    return model, df


def test_passthrough_is_a_typed_marker():
    assert isinstance(PASSTHROUGH, Passthrough) and PASSTHROUGH == "passthrough"
    assert is_passthrough("passthrough") and is_passthrough(PASSTHROUGH)
    assert not is_passthrough("hog") and not is_passthrough(NumberEncoder())
    views, y = make_views(n=60)
    model = MultimodalClassifier(cv=3, random_state=0).fit(views, y)
    assert all(e is PASSTHROUGH for e in model.encoders_.values())
    assert model.featurizer().kind("a") == "features"
    assert model.featurizer().dim("a") == views["a"].shape[1]


def test_every_path_gives_the_same_views(number_model):
    model, df = number_model
    head = df.iloc[:12].copy()
    head.loc[2, "left"] = None
    views, present = model.transform_views(head)
    featurizer = model.featurizer()
    encoded = featurizer.transform(head)
    via_predict = encode(model, {c: head[c] for c in head}, len(head))
    batch = []
    for i in range(len(head)):
        item = {}
        for c in head:
            try:
                item[c] = featurizer.prepare_item(c, head.loc[i, c])
            except MissingItem:
                pass
        batch.append(item)
    served = featurizer.views_from_prepared(batch)
    for other_views, other_present in ((encoded.views, encoded.present), via_predict[:2], served):
        assert sorted(other_views) == sorted(views)
        for m in views:
            np.testing.assert_array_equal(other_views[m], views[m])
            np.testing.assert_array_equal(other_present[m], present[m])
    assert not present["left"][2] and present["right"][2]
    np.testing.assert_array_equal(model.predict_views(views, present), model.predict_proba(head))


def test_prepare_item_missing_and_unreadable(number_model):
    featurizer = number_model[0].featurizer()
    with pytest.raises(MissingItem):
        featurizer.prepare_item("left", "-")
    with pytest.raises(InputError, match="cannot parse"):
        featurizer.prepare_item("left", "bad")


def test_missing_columns_and_widths(number_model):
    model, df = number_model
    featurizer = model.featurizer()
    with pytest.raises(InputError, match=r"lacks the columns the model was trained on: \['right'\]"):
        featurizer.transform(df[["left"]])
    absent = featurizer.transform(df[["left"]], missing_columns="absent")
    assert not absent.present["right"].any() and absent.present["left"].all()
    nothing = featurizer.transform({}, missing_columns="absent", n_rows=3)
    assert nothing.views["left"].shape == (3, 2) and not nothing.present["left"].any()
    views, y = make_views(n=60)
    passthrough = MultimodalClassifier(cv=3, random_state=0).fit(views, y)
    with pytest.raises(InputError, match="but MultimodalClassifier is expecting"):
        passthrough.featurizer().transform({"a": views["a"][:, :2], "b": views["b"]})


def test_deferred_stateful_encoders_fit_per_fold_on_copies():
    df, _ = number_frame(n=40)
    featurizer = Featurizer({"left": NumberEncoder(), "right": VocabEncoder()})
    encoded = featurizer.transform_deferred(df)
    assert list(encoded.deferred) == ["right"] and encoded.views["right"].shape == (40, 1)
    train = np.arange(20)
    views = featurizer.fit_fold(encoded, train)
    assert views["right"].shape == (40, 2)
    assert not hasattr(featurizer.encoders["right"], "vocab_")  # fitted a copy
    seen = set(float(v) for v in df["right"].iloc[:20])
    assert views["right"][:20, 0].all()
    assert views["right"][20:, 0].tolist() == [float(float(v) in seen)
                                               for v in df["right"].iloc[20:]]


class PairEncoder(NumberEncoder):
    """Reads two columns: one record per row."""

    name = "test-number"
    input_columns = ("p", "q")

    def prepare(self, item):
        values = [float(v) for v in item.values() if not is_missing(v)]
        return sum(values)


def test_an_encoder_may_read_several_columns():
    table = pd.DataFrame({"p": ["1", None, None], "q": ["2", "5", None]})
    specs = resolve_encoders({"pair": PairEncoder()}, table)
    encoded = Featurizer(specs).transform(table)
    assert Featurizer(specs).columns == ["p", "q"]
    assert encoded.present["pair"].tolist() == [True, True, False]
    assert encoded.views["pair"][:2, 0].tolist() == [3.0, 5.0]
    with pytest.raises(InputError, match="columns the data does not have"):
        resolve_encoders({"pair": PairEncoder()}, table[["p"]])


@pytest.mark.parametrize("encoders, match", [
    ({"image": "tfidf"}, r"encoder 'tfidf' encodes text, not image: column 'image' takes one "
                         r"of .*hog"),
    ({"text": "hog"}, r"encoder 'hog' encodes image, not text: column 'text' takes one of "
                      r".*tfidf"),
    ({"audio": "pixels+hog"}, r"'pixels\+hog' encodes image, not audio: .*mfcc"),
    ({"text": ["hog", "pixels"]}, r"'hog' encodes image, not text"),
    ({"image": NumberEncoder()}, r"'test-number' encodes text, not image"),
])
def test_an_encoder_of_another_modality_is_refused(encoders, match):
    X = pd.DataFrame({"image": ["a/cat/1.png"], "text": ["x"], "audio": ["a.wav"]})
    with pytest.raises(InputError, match=match):
        resolve_encoders(encoders, X)
    with pytest.raises(InputError, match=match):  # the estimator refuses it before any work
        MultimodalClassifier(encoders=encoders).fit(pd.concat([X] * 4, ignore_index=True),
                                                    [0, 1, 0, 1])


def test_columns_not_named_like_a_modality_take_any_encoder():
    X = pd.DataFrame({"caption": ["x"], "image": ["a.png"]})
    assert resolve_encoders({"caption": "tfidf", "image": "hog"}, X) == {
        "caption": "tfidf", "image": "hog"}
