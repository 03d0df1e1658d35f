"""Chunked exact k-NN against a brute-force reference: every metric, chunk size, ties, small N/M."""

import pytest
import torch

from ganforge.errors import GanforgeError
from ganforge.metrics.knn import knn


def brute_knn(q, r, k, metric):
    """All N x M float64 distances from differences, then a (distance, index) sort per row."""
    q, r = q.reshape(len(q), -1).double(), r.reshape(len(r), -1).double()
    diff = q[:, None, :] - r[None, :, :]
    d = diff.abs().sum(-1) if metric == "l1" else (diff**2).sum(-1)
    idx = torch.tensor([sorted(range(len(r)), key=lambda j: (row[j].item(), j))[:k] for row in d])
    dist = d.gather(1, idx)
    return (dist.sqrt() if metric == "l2" else dist), idx


@pytest.fixture(scope="module")
def pixels():
    g = torch.Generator().manual_seed(0)
    refs = torch.randint(0, 256, (40, 1, 5, 5), dtype=torch.uint8, generator=g)
    refs = torch.cat([refs, refs[:8], refs[:8], refs[3:4].repeat(12, 1, 1, 1)])  # duplicates: exact ties
    queries = torch.cat([torch.randint(0, 256, (13, 1, 5, 5), dtype=torch.uint8, generator=g), refs[:6]])
    return queries, refs


@pytest.mark.parametrize("metric", ["l2", "l1"])
@pytest.mark.parametrize("k", [1, 4, 20])
@pytest.mark.parametrize("chunks", [(1, 1), (4, 7), (5, 33), (1000, 1000)])
def test_equals_brute_force_with_ties(pixels, metric, k, chunks):
    q, r = pixels
    ref_d, ref_i = brute_knn(q, r, k, metric)
    for extra in (0, 8):  # extra=0 forces the float64 fallback whenever there is a near-tie
        d, i = knn(q, r, k, metric, query_chunk=chunks[0], ref_chunk=chunks[1], extra=extra)
        assert torch.equal(i, ref_i)
        assert torch.allclose(d, ref_d, rtol=0, atol=1e-9)
        assert d.dtype == torch.float64 and i.dtype == torch.long


def test_ties_go_to_the_lowest_reference_index():
    refs = torch.tensor([[5.0], [1.0], [1.0], [3.0], [1.0]])
    d, i = knn(torch.tensor([[1.0]]), refs, k=4, ref_chunk=2, extra=0)
    assert i.tolist() == [[1, 2, 4, 3]]
    assert d.tolist() == [[0.0, 0.0, 0.0, 2.0]]


@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_float_inputs_with_large_offset(metric):
    # Large common offset: float32 expansions lose digits, the float64 re-ranking must not.
    g = torch.Generator().manual_seed(1)
    q = torch.randn(9, 6, generator=g, dtype=torch.float64) * 10 + 1e4
    r = torch.randn(30, 6, generator=g, dtype=torch.float64) * 10 + 1e4
    ref_d, ref_i = brute_knn(q, r, 3, metric)
    d, i = knn(q, r, 3, metric, query_chunk=4, ref_chunk=8, extra=2)
    assert torch.equal(i, ref_i)
    assert torch.allclose(d, ref_d, rtol=1e-12)


def test_fewer_queries_and_refs_than_a_chunk_and_k_equal_m():
    q = torch.tensor([[0, 0], [9, 9]], dtype=torch.uint8)
    r = torch.tensor([[1, 1], [8, 8], [0, 3]], dtype=torch.uint8)
    d, i = knn(q, r, k=3, query_chunk=1024, ref_chunk=8192)
    assert i.tolist() == [[0, 2, 1], [1, 2, 0]]
    assert d[0].tolist() == pytest.approx([2**0.5, 3.0, 128**0.5])


def test_bad_input_is_one_clear_error():
    r = torch.zeros(3, 4)
    with pytest.raises(GanforgeError, match="between 1 and the number of references"):
        knn(torch.zeros(1, 4), r, k=4)
    with pytest.raises(GanforgeError, match="unknown k-NN metric"):
        knn(torch.zeros(1, 4), r, metric="cosine")
    with pytest.raises(GanforgeError, match="same size"):
        knn(torch.zeros(1, 5), r)
