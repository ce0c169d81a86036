"""Pure identity functions: robust centres, outliers, cross-class conflicts, components."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.components import identity
from pipeline.components.identity import (
    IdentityRule,
    centre_distances,
    close_pairs,
    components,
    distances,
    find_label_conflicts,
    find_wrong_identity,
    robust_centre,
)

RELATIVE = IdentityRule("relative", 0.45, 1.5, None)


def _cluster(centre: np.ndarray, n: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return centre + spread * rng.standard_normal((n, len(centre))) / np.sqrt(len(centre))


def _classes(seed: int = 0) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Three 32-d identities 1.0 apart, 8 faces each at ~0.3 from their centre."""
    rng = np.random.default_rng(seed)
    centres = {label: rng.standard_normal(32) / np.sqrt(32) * 0.71 for label in "abc"}
    labels, rows = [], []
    for k, (label, centre) in enumerate(centres.items()):
        rows.append(_cluster(centre, 8, 0.3, seed + k))
        labels += [label] * 8
    return labels, np.vstack(rows), centres


def test_distances_match_numpy() -> None:
    x = np.random.default_rng(0).standard_normal((5, 7))
    expected = np.linalg.norm(x[:, None] - x[None], axis=2)
    assert np.allclose(distances(x), expected)
    assert np.allclose(distances(x[:2], x), expected[:2])


def test_robust_centre_is_not_dragged_by_an_outlier() -> None:
    members = _cluster(np.zeros(16), 9, 0.3, 1)
    far = np.full((1, 16), 3.0)
    centre = robust_centre(np.vstack([members, far]))
    plain_mean = np.vstack([members, far]).mean(axis=0)
    assert np.linalg.norm(centre - members.mean(axis=0)) < 0.05
    assert np.linalg.norm(plain_mean - members.mean(axis=0)) > 0.5


def test_leave_one_out_keeps_an_intruder_far() -> None:
    members = _cluster(np.zeros(16), 5, 0.3, 2)
    intruder = np.full((1, 16), 0.25)
    d = centre_distances(np.vstack([members, intruder]))
    assert d[-1] == pytest.approx(np.linalg.norm(intruder[0] - robust_centre(members)))
    assert d[-1] > 1.5 * np.median(d[:-1])


def test_injected_face_of_another_class_is_the_only_outlier() -> None:
    labels, x, centres = _classes()
    labels.append("a")  # a face of class b filed under a
    x = np.vstack([x, _cluster(centres["b"], 1, 0.3, 99)])
    outliers = find_wrong_identity(labels, x, RELATIVE)
    assert [o.index for o in outliers] == [len(labels) - 1]
    assert outliers[0].distance > outliers[0].limit
    nearer = IdentityRule("relative", 0.45, 1.5, 1.2)
    caught = find_wrong_identity(labels, x, nearer)
    assert [(o.index, o.nearer_label) for o in caught] == [(len(labels) - 1, "b")]
    assert "class 'b'" in caught[0].describe()


def test_absolute_rule_uses_the_fixed_distance_and_off_disables() -> None:
    labels, x, _ = _classes()
    own = centre_distances(x[:8])
    between = float(np.sort(own)[-2])  # one member lies beyond this limit
    strict = IdentityRule("absolute", between, 99.0, None)
    assert [o.index for o in find_wrong_identity(labels, x, strict) if o.index < 8] == [
        int(np.argmax(own))
    ]
    assert find_wrong_identity(labels, x, IdentityRule("off", 0.0, 0.0, 0.1)) == []


def test_the_relative_limit_never_falls_below_the_floor() -> None:
    rule = IdentityRule("relative", 0.45, 1.5, None)
    assert rule.limit(0.1) == 0.45
    assert rule.limit(0.4) == pytest.approx(0.6)


def test_small_classes_are_not_judged() -> None:
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]])
    assert find_wrong_identity(["a", "a", "b"], x, RELATIVE) == []


def test_close_pairs_in_blocks_equal_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(3).standard_normal((23, 4))
    d = distances(x)
    expected = {(i, j) for i in range(23) for j in range(i + 1, 23) if d[i, j] < 2.0}
    monkeypatch.setattr(identity, "_BLOCK", 5)
    assert {(i, j) for i, j, _ in close_pairs(x, 2.0)} == expected


def test_same_face_in_two_classes_reject_both() -> None:
    labels, x, _ = _classes()
    twin = x[3] + 0.01  # the photo of a[3] filed under c too
    labels.append("c")
    x = np.vstack([x, twin])
    conflicts = find_label_conflicts(labels, x, 0.25, "reject_both")
    assert [(c.index, c.partner) for c in conflicts] == [(3, len(x) - 1), (len(x) - 1, 3)]
    assert all(c.distance < 0.25 and c.kept_label is None for c in conflicts)


def test_keep_majority_keeps_the_copy_in_the_class_it_resembles() -> None:
    labels, x, _ = _classes()
    labels.append("c")
    x = np.vstack([x, x[3] + 0.01])
    conflicts = find_label_conflicts(labels, x, 0.25, "keep_majority")
    assert [(c.index, c.kept_label) for c in conflicts] == [(len(x) - 1, "a")]


def test_look_alikes_within_one_class_are_not_conflicts() -> None:
    labels, x, _ = _classes()
    x[1] = x[0] + 0.01
    assert find_label_conflicts(labels, x, 0.25, "reject_both") == []


def test_components_join_chains() -> None:
    assert components(6, [(0, 2), (2, 4), (5, 1)]) == [[0, 2, 4], [1, 5], [3]]
