import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.views import check_views


def test_sorted_float32_and_presence_from_nan_rows():
    a = np.ones((3, 2))
    a[1] = np.nan
    views, present = check_views({"z": np.zeros((3, 1)), "a": a})
    assert list(views) == ["a", "z"]
    assert views["a"].dtype == np.float32
    assert present["a"].tolist() == [True, False, True]
    assert present["z"].all()


@pytest.mark.parametrize("views, match", [
    ({}, "non-empty dict"),
    ({"a": np.ones((3, 2)), "b": np.ones((4, 2))}, "same number of samples"),
    ({"a": np.ones((3, 2, 2))}, "must be 2-D"),
    ({"a": np.ones((3, 0))}, "no features"),
    ({"a": np.array([["x"], ["y"]])}, "not numeric"),
])
def test_bad_views(views, match):
    with pytest.raises(InputError, match=match):
        check_views(views)


def test_nan_in_present_row_names_modality_and_row():
    a = np.ones((4, 3))
    a[2, 1] = np.inf
    with pytest.raises(InputError, match=r"view 'img' has NaN or inf in row 2"):
        check_views({"img": a})


def test_present_mask_length_checked():
    with pytest.raises(InputError, match="present\\['a'\\] has 2 entries"):
        check_views({"a": np.ones((3, 1))}, {"a": np.ones(2, bool)})


def test_rows_without_any_modality_can_be_refused():
    a = np.full((2, 1), np.nan)
    a[0] = 1
    with pytest.raises(InputError, match="row 1 has no modality"):
        check_views({"a": a}, allow_all_missing_rows=False)


def test_sparse_views_stay_sparse_and_present_comes_from_the_mask():
    from scipy import sparse

    from mmfuse.views import blank_rows, dense

    s = sparse.random(5, 7, density=0.4, format="csr", random_state=0, dtype=np.float64)
    views, present = check_views({"t": s, "d": np.ones((5, 2))})
    assert sparse.issparse(views["t"]) and views["t"].dtype == np.float32
    assert present["t"].all()  # a zero row of a sparse view is "no features", not missing
    mask = np.array([1, 0, 1, 1, 1], bool)
    _, present = check_views({"t": s}, {"t": mask})
    assert present["t"].tolist() == mask.tolist()
    blanked = blank_rows(views["t"], ~mask)
    assert sparse.issparse(blanked) and blanked[1].nnz == 0
    assert np.allclose(dense(blanked)[mask], dense(views["t"])[mask])
    bad = s.copy()
    bad.data[bad.indptr[3]] = np.nan
    with pytest.raises(InputError, match=r"sparse view 't' has NaN or inf in row 3"):
        check_views({"t": bad})
    with pytest.raises(InputError, match="same number of samples"):
        check_views({"t": s, "d": np.ones((4, 2))})
