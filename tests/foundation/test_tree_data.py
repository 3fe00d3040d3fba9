"""Pytree and nested-batch helpers."""

import numpy as np
import pytest

from arrayrl import data
from arrayrl.tree import tree_flatten, tree_map, tree_paths, tree_unflatten


def test_flatten_roundtrip_keeps_order_and_none():
    t = {"b": [1, (2, 3)], "a": None, "c": {"d": 4}}
    leaves, d = tree_flatten(t)
    assert leaves == [1, 2, 3, 4]
    assert tree_unflatten(d, [10, 20, 30, 40]) == {"b": [10, (20, 30)], "a": None, "c": {"d": 40}}
    with pytest.raises(ValueError, match="left over"):
        tree_unflatten(d, [1, 2, 3, 4, 5])


def test_tree_map_multi_and_structure_mismatch():
    assert tree_map(lambda x, y: x + y, {"a": 1, "b": [2]}, {"a": 10, "b": [20]}) == {"a": 11, "b": [22]}
    with pytest.raises(ValueError, match="structure"):
        tree_map(lambda x, y: x, {"a": 1}, {"b": 1})


def test_tree_paths():
    assert tree_paths({"a": {"w": 1, "b": 2}, "c": [3]}) == [(("a", "w"), 1), (("a", "b"), 2), (("c", 0), 3)]


def test_nested_get_set_with_select():
    r = np.ones(2)
    batch = {"obs": np.zeros(2), "next": {"reward": r}}
    assert data.get(batch, ("next", "reward")) is r
    assert data.get(batch, "obs") is batch["obs"]
    assert data.has(batch, ("next", "reward")) and not data.has(batch, ("next", "done"))
    new = data.with_(batch, ("next", "done"), np.zeros(2, bool))
    assert "done" not in batch["next"], "with_ must not mutate the caller's batch"
    assert data.get(new, ("next", "reward")) is r
    sel = data.select(new, [("next", "done")])
    assert data.keys(sel) == [("next", "done")]
    assert data.flatten_keys(new).keys() == {"obs", "next_reward", "next_done"}


def test_missing_key_message_lists_present_keys():
    with pytest.raises(KeyError, match=r"key \('next', 'done'\) \(done flag\) not found.*'obs', \('next', 'reward'\)"):
        data.get({"obs": 1, "next": {"reward": 2}}, ("next", "done"), what="done flag")


def test_set_in_place_creates_path():
    b = {}
    data.set_(b, ("next", "obs"), 1)
    assert b == {"next": {"obs": 1}}
    with pytest.raises(KeyError, match="holds a leaf"):
        data.set_({"next": 1}, ("next", "obs"), 2)


def test_unravel_key():
    assert data.unravel_key(("a", ("b", "c"))) == ("a", "b", "c")
    assert data.unravel_key("a") == ("a",)


def test_without_drops_a_nested_key_and_copies_only_its_path():
    from arrayrl.data import without

    leaf = [1]
    batch = {"a": 1, "next": {"reward": 2, "done": 3}, "other": {"x": leaf}}
    out = without(batch, ("next", "reward"))
    assert out == {"a": 1, "next": {"done": 3}, "other": {"x": leaf}}
    assert batch["next"] == {"reward": 2, "done": 3}  # the caller's dicts are untouched
    assert out["other"] is batch["other"]  # off-path dicts are shared
    assert without(batch, "a") == {"next": {"reward": 2, "done": 3}, "other": {"x": leaf}}
    assert without(batch, ("missing", "key")) == batch
