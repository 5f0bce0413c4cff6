"""The shard writer's column builders and readers (pipeline/output/shards.py) give exactly what
`pa.array` and `to_pylist` give, without the pandas import those cost: any strings (ASCII or not,
empty, null), bytes, optional ints, booleans, lists, sliced arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.output.shards import (
    bits,
    list_array,
    list_type,
    numeric_array,
    optional_ints,
    repeated_string,
    string_array,
    values_view,
)

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # no lone surrogates


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=40))
def test_string_columns_equal_pa_array(values):
    got = string_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=12)), max_size=40))
def test_binary_columns_equal_pa_array(values):
    got = string_array(values, binary=True)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.binary()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=40))
def test_optional_int_columns_equal_pa_array(values):
    got = optional_ints(values, pa.int64())
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.int64()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=70), st.integers(0, 20))
def test_booleans_and_their_bits_round_trip_at_any_offset(values, start):
    got = numeric_array(np.array(values, dtype=bool), pa.bool_())
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.bool_()))
    part = got.slice(min(start, len(values)))
    assert bits(part).tolist() == part.to_pylist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 65535), max_size=6), max_size=20), st.integers(0, 5))
def test_list_columns_have_the_schema_type_and_views_read_them(docs, start):
    flat = np.array([t for d in docs for t in d], dtype=np.uint32)
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    got = list_array(flat, offsets, pa.uint16())
    got.validate(full=True)
    assert got.type == list_type(pa.uint16()) and got.to_pylist() == docs
    part = got.slice(min(start, len(docs)))
    values, bounds = values_view(part.values), values_view(part.offsets)
    assert [
        values[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ] == part.to_pylist()


def test_nulls_repeats_and_what_a_view_refuses():
    counts = np.array([3, -1, 7], dtype=np.int32)
    assert numeric_array(counts, pa.int32(), counts < 0).to_pylist() == [3, None, 7]
    assert repeated_string("de", 3).to_pylist() == ["de"] * 3
    assert repeated_string(None, 2).to_pylist() == [None, None]
    assert repeated_string("", 2).to_pylist() == ["", ""]
    with pytest.raises(ValueError, match="nulls"):
        values_view(pa.array([1, None], pa.int64()))
    with pytest.raises(TypeError, match="bits"):
        values_view(pa.array([True], pa.bool_()))
    with pytest.raises(UnicodeEncodeError):  # the readers reject such records first
        string_array(["a\ud800"])
