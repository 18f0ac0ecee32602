"""Property-based tests of the readers users feed files to: parse, or raise the clear error."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segpets.constants import IGNORE_INDEX
from segpets.data.oxford_pet import BOUNDARIES, parse_list_file, trimap_to_mask
from segpets.errors import DataError

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

word = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)
line = st.one_of(
    st.lists(word, min_size=0, max_size=6).map(" ".join),
    st.text(max_size=40),
    st.just("# a comment"),
)


@FUZZ
@given(lines=st.lists(line, max_size=12))
def test_list_files_parse_or_name_the_bad_line(tmp_path, lines):
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        names = parse_list_file(path)
    except DataError as error:
        message = str(error)
        assert str(path) in message and "line " in message and "expected 4 fields" in message
        return
    expected = [
        row.split()[0]
        for row in path.read_text(encoding="utf-8").splitlines()
        if row.strip() and not row.lstrip().startswith("#")
    ]
    assert names == expected
    assert all(
        len(row.split()) == 4
        for row in path.read_text().splitlines()
        if row.split() and not row.lstrip().startswith("#")
    )


@FUZZ
@given(data=st.binary(max_size=300))
def test_list_files_of_random_bytes_never_crash_otherwise(tmp_path, data):
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    try:
        parse_list_file(path)
    except DataError as error:
        assert str(path) in str(error)


@FUZZ
@given(
    trimap=arrays(
        np.uint8, st.tuples(st.integers(0, 8), st.integers(0, 8)), elements=st.integers(0, 255)
    ),
    boundary=st.sampled_from(BOUNDARIES),
)
def test_trimaps_convert_or_name_the_unexpected_values(trimap, boundary):
    try:
        mask = trimap_to_mask(trimap, boundary)
    except DataError as error:
        unexpected = sorted(set(np.unique(trimap).tolist()) - {1, 2, 3})
        assert unexpected and str(unexpected) in str(error)
        return
    assert mask.shape == trimap.shape and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1, IGNORE_INDEX}
    assert (mask[trimap == 1] == 1).all() and (mask[trimap == 2] == 0).all()
    border = {"foreground": 1, "background": 0, "ignore": IGNORE_INDEX}[boundary]
    assert (mask[trimap == 3] == border).all()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_trimaps_with_only_valid_values_always_convert(boundary):
    trimap = np.random.default_rng(0).integers(1, 4, size=(32, 32), dtype=np.uint8)
    assert trimap_to_mask(trimap, boundary).shape == (32, 32)
