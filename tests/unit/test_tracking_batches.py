"""A candidate's params and metrics reach MLflow in as few calls as its log_batch limits allow."""

from autodl.tracking.mlflow import _batches


def test_batches_keep_every_entity_in_order_within_mlflows_limits():
    params, metrics = [f"p{i}" for i in range(150)], [f"m{i}" for i in range(1900)]
    batches = list(_batches(params, metrics))
    assert [(len(p), len(m)) for p, m in batches] == [(100, 900), (50, 950), (0, 50)]
    assert [x for p, _ in batches for x in p] == params
    assert [x for _, m in batches for x in m] == metrics


def test_a_small_candidate_is_one_call():
    assert list(_batches(["a"], ["b", "c"])) == [(["a"], ["b", "c"])]
    assert list(_batches([], [])) == []
