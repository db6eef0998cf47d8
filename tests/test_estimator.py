import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import make_views, number_frame
from mmfuse import InputError, MultimodalClassifier
from mmfuse.views import views_to_frame


def test_dict_of_arrays_is_passthrough(two_views):
    views, y = two_views
    clf = MultimodalClassifier(fusion="late", random_state=0).fit(views, y)
    assert clf.predict(views).shape == (len(y),)
    assert clf.predict_proba(views).shape == (len(y), 4)
    assert clf.score(views, y) > 0.7
    assert set(clf.modality_weights_) == {"a", "b"}


def test_dataframe_with_encoders_and_single_modality():
    df, y = number_frame()
    clf = MultimodalClassifier(encoders={"left": "test-number", "right": "test-number"},
                               fusion="stacking", random_state=0).fit(df, y)
    assert clf.score(df, y) > 0.7
    single = MultimodalClassifier(encoders={"left": "test-number"}).fit(df, y)
    assert 0.3 < single.score(df, y) < 0.6  # one column sees only the parity


def test_works_with_clone_gridsearch_and_cross_val_score(two_views):
    views, y = two_views
    views = views_to_frame(views)  # scikit-learn's splitters index rows: use a DataFrame
    clf = MultimodalClassifier(cv=3, random_state=0)
    assert clone(clf).get_params() == clf.get_params()
    grid = GridSearchCV(clf, {"fusion": ["early", "late"]}, cv=3).fit(views, y)
    assert grid.best_params_["fusion"] in {"early", "late"}
    groups = np.arange(len(y)) % 5
    scores = cross_val_score(clf, views, y, cv=GroupKFold(3), groups=groups)
    assert scores.mean() > 0.6


def test_groups_are_passed_to_inner_splits():
    views, y = make_views(n=200)
    groups = np.arange(200) % 4
    clf = MultimodalClassifier(random_state=0).fit(views, y, groups=groups)
    assert clf.fusion_.classes_.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs, X, match", [
    ({"encoders": {"nope": "test-number"}}, "df", "columns the data does not have: \\['nope'\\]"),
    ({"encoders": {"left": "magic"}}, "df", "unknown encoder 'magic'; valid names: .*test-number"),
    ({"fusion": "magic"}, "views", "unknown fusion strategy 'magic'"),
    ({}, "df", "encoders is required for a DataFrame"),
    ({"on_error": "ignore"}, "views", "on_error must be one of"),
    ({"encoders": "best"}, "df", "encoders must be a dict or 'auto'"),
])
def test_configuration_errors(kwargs, X, match):
    df, y = number_frame(n=60)
    views, _ = make_views(n=60)
    with pytest.raises(InputError, match=match):
        MultimodalClassifier(**kwargs).fit(df if X == "df" else views, y)


def test_data_errors():
    views, y = make_views(n=60)
    with pytest.raises(InputError, match="at least 2 classes"):
        MultimodalClassifier().fit(views, np.zeros(60))
    with pytest.raises(InputError, match="X has 60 samples but y has 59 labels"):
        MultimodalClassifier().fit(views, y[:59])
    with pytest.raises(InputError, match="same number of samples"):
        MultimodalClassifier().fit({"a": views["a"], "b": views["b"][:10]}, y)
    with pytest.raises(InputError, match="requires y to be passed"):
        MultimodalClassifier().fit(views, None)


def test_predict_needs_the_training_columns():
    df, y = number_frame(n=80)
    clf = MultimodalClassifier(encoders={"left": "test-number", "right": "test-number"},
                               weights="equal").fit(df, y)
    with pytest.raises(InputError, match="lacks the columns the model was trained on: \\['right'\\]"):
        clf.predict(df[["left"]])


def test_bad_item_raises_with_row_and_column_or_is_skipped_and_reported():
    df, y = number_frame(n=120)
    df.loc[7, "left"] = "bad"
    enc = {"left": "test-number", "right": "test-number"}
    with pytest.raises(InputError, match="row 7, column 'left': cannot parse 'bad'"):
        MultimodalClassifier(encoders=enc).fit(df, y)
    clf = MultimodalClassifier(encoders=enc, on_error="skip", random_state=0).fit(df, y)
    assert [(e.row, e.column) for e in clf.errors_] == [(7, "left")]
    assert clf.skipped_rows_ == []  # row 7 still has "right"


def test_rows_with_no_modality_are_dropped_and_listed_with_skip():
    df, y = number_frame(n=120)
    df.loc[3, ["left", "right"]] = None
    df.loc[4, "left"], df.loc[4, "right"] = "-", ""  # empty after preprocessing, and blank
    enc = {"left": "test-number", "right": "test-number"}
    with pytest.raises(InputError, match="row 3 has no modality at all \\(2 such rows\\)"):
        MultimodalClassifier(encoders=enc).fit(df, y)
    clf = MultimodalClassifier(encoders=enc, on_error="skip", random_state=0).fit(df, y)
    assert clf.skipped_rows_ == [3, 4]
    with pytest.raises(InputError, match="row 0 has no usable modality"):
        MultimodalClassifier(encoders=enc, random_state=0).fit(df.drop([3, 4]), np.delete(y, [3, 4])) \
            .predict(df.iloc[[3]])
    fit_errors = list(clf.errors_)
    proba = clf.predict_proba(df.iloc[[3, 5]])
    np.testing.assert_allclose(proba[0], np.bincount(np.delete(y, [3, 4])) / 118)
    assert clf.errors_ == fit_errors  # predicting never changes the model
    report = clf.predict_report(df.iloc[[3, 5]])
    np.testing.assert_array_equal(report.proba, proba)
    np.testing.assert_array_equal(report.labels, clf.predict(df.iloc[[3, 5]]))
    assert [(e.row, e.message) for e in report.errors] == [
        (0, "no usable modality: predicted the class prior")]


def test_predict_leaves_the_estimator_unchanged_and_reports_item_errors():
    from sklearn.utils.estimator_checks import check_dict_unchanged

    check_dict_unchanged("MultimodalClassifier", MultimodalClassifier(random_state=0))
    df, y = number_frame(n=120)
    enc = {"left": "test-number", "right": "test-number"}
    clf = MultimodalClassifier(encoders=enc, on_error="skip", random_state=0).fit(df, y)
    before = {k: (v.copy() if isinstance(v, (list, dict)) else v) for k, v in vars(clf).items()}
    bad = df.iloc[:4].copy()
    bad.loc[bad.index[2], "left"] = "bad"
    report = clf.predict_report(bad)
    clf.predict(bad), clf.predict_proba(bad)
    assert vars(clf).keys() == before.keys()
    assert all(vars(clf)[k] is before[k] or vars(clf)[k] == before[k]
               for k in before if not isinstance(before[k], np.ndarray))
    assert [(e.row, e.column) for e in report.errors] == [(2, "left")]
    assert "cannot parse 'bad'" in report.errors[0].message


def test_missing_modality_cells_are_normal():
    df, y = number_frame(n=200)
    df.loc[::5, "right"] = None
    clf = MultimodalClassifier(encoders={"left": "test-number", "right": "test-number"},
                               random_state=0).fit(df, y)
    assert clf.score(df, y) > 0.6


def test_encoders_auto_needs_modality_named_columns():
    df, y = number_frame(n=60)
    with pytest.raises(InputError, match="encoders='auto' picks an encoder for columns named"):
        MultimodalClassifier(encoders="auto").fit(df, y)


@parametrize_with_checks([MultimodalClassifier(cv=3, random_state=0),
                          MultimodalClassifier(fusion="stacking", cv=3, random_state=0)])
def test_sklearn_compatible(estimator, check):
    # A plain 2-D array is one pre-extracted view named "x", so scikit-learn's own checks
    # apply; none is skipped (sparse input is refused with scikit-learn's standard message).
    check(estimator)


def test_views_frame_keeps_missing_rows(two_views):
    views, y = two_views
    views["b"][:3] = np.nan
    df = views_to_frame(views)
    assert df["b"][:3].isna().all()
    clf = MultimodalClassifier(random_state=0).fit(df, y)
    v, present = clf.transform_views(df)
    assert present["b"].tolist()[:4] == [False, False, False, True]


def test_fit_runs_blas_on_one_thread_and_restores_it(two_views):
    from threadpoolctl import threadpool_info, threadpool_limits

    from mmfuse.fusion.late import LateFusion

    seen = []

    class Recording(LateFusion):
        def _fit(self, views, y, present, groups):
            seen.extend(i["num_threads"] for i in threadpool_info()
                        if i["user_api"] == "blas")
            return super()._fit(views, y, present, groups)

    views, y = two_views
    with threadpool_limits(limits=2, user_api="blas"):
        MultimodalClassifier(fusion=Recording(weights="equal"), random_state=0).fit(views, y)
        after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert seen and set(seen) == {1}
    assert set(after) == {2}  # the caller's setting is back
