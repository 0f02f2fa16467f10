from __future__ import annotations

import itertools
import re

import pytest
import torch

from ner.model.crf import (
    CRF, FORBIDDEN_SCORE, NO_WORD, _loop_marginals, _scan_marginals, allowed_transitions, constrained_decode, gather_words,
    scatter_words, viterbi_decode, word_index_of,
)
from ner.data.schemes import transition_tables

LABELS = {
    "IOB2": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
    "IOBES": ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"],
    "BILOU": ["O", "B-PER", "I-PER", "L-PER", "U-PER", "B-LOC", "I-LOC", "L-LOC", "U-LOC"],
}

# One chunk of a valid sentence, per scheme: an independent grammar to check decoded output against.
CHUNK = {
    "IOB2": r"(?:O|B-(?P<t>\w+)(?: I-(?P=t))*) ",
    "IOBES": r"(?:O|S-\w+|B-(?P<t>\w+)(?: I-(?P=t))* E-(?P=t)) ",
    "BILOU": r"(?:O|U-\w+|B-(?P<t>\w+)(?: I-(?P=t))* L-(?P=t)) ",
}


def is_valid(tags: list[str], scheme: str) -> bool:
    chunk = re.compile(CHUNK[scheme])
    text, position = " ".join(tags) + " ", 0
    while position < len(text):
        match = chunk.match(text, position)
        if not match:
            return False
        position = match.end()
    return True


@pytest.mark.parametrize(
    "scheme, n_transitions, starts, ends",
    [
        # IOB2: 25 pairs minus I-X after O, after the other type's B/I: 2 * 3 forbidden.
        ("IOB2", 19, ["O", "B-PER", "B-LOC"], ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
        # IOBES: from O/E/S (5 labels) to O/B/S (5 labels) = 25, plus from B-X/I-X to I-X/E-X = 2 * 2 * 2 = 8.
        ("IOBES", 33, ["O", "B-PER", "S-PER", "B-LOC", "S-LOC"], ["O", "E-PER", "S-PER", "E-LOC", "S-LOC"]),
        ("BILOU", 33, ["O", "B-PER", "U-PER", "B-LOC", "U-LOC"], ["O", "L-PER", "U-PER", "L-LOC", "U-LOC"]),
    ],
)
def test_allowed_transition_counts(scheme, n_transitions, starts, ends):
    labels = LABELS[scheme]
    transitions, start, end = allowed_transitions(labels, scheme)
    assert transitions.dtype == start.dtype == end.dtype == torch.bool
    assert transitions.shape == (len(labels), len(labels))
    assert transitions.sum().item() == n_transitions
    assert [labels[i] for i in start.nonzero().flatten()] == starts
    assert [labels[i] for i in end.nonzero().flatten()] == ends


def test_allowed_transitions_untyped_labels():
    transitions, start, _ = allowed_transitions(["O", "B", "I"], "IOB2")
    assert transitions.tolist() == [[True, True, False], [True, True, True], [True, True, True]]
    assert start.tolist() == [True, True, False]


@pytest.mark.parametrize(
    "labels, scheme",
    [*((labels, scheme) for scheme, labels in LABELS.items()), (["O", "B", "I"], "IOB2"), (["U-X", "O", "L-X", "I-X"], "BILOU"), ([], "IOBES")],
)
def test_allowed_transitions_are_the_scheme_tables(labels, scheme):
    """The tensors are ``ner.data.schemes``' tables, entry for entry: the rules live there, crf only converts them."""
    tables = allowed_transitions(labels, scheme)
    assert [tuple(t.shape) for t in tables] == [(len(labels), len(labels)), (len(labels),), (len(labels),)]
    assert [t.tolist() for t in tables] == list(transition_tables(labels, scheme))


def path_score(emissions, transitions, start, end, path):
    score = start[path[0]] + end[path[-1]] + sum(emissions[t, y] for t, y in enumerate(path))
    return score + sum(transitions[a, b] for a, b in zip(path, path[1:]))


def all_scores(emissions, transitions, start, end):
    """{path: score} over every label path of one packed sequence (brute force)."""
    length, num_labels = emissions.shape
    return {
        path: path_score(emissions, transitions, start, end, path)
        for path in itertools.product(range(num_labels), repeat=length)
    }


MASKS = [
    [1, 1, 1, 1, 1],
    [1, 1, 1, 0, 0],  # padding at the end
    [0, 1, 0, 1, 1],  # holes: first sub-tokens only
    [1, 0, 0, 0, 1],
    [0, 0, 1, 0, 0],  # a single kept position
    [0, 0, 0, 0, 0],  # nothing kept
]


def random_problem(seed: int, num_labels: int):
    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(len(MASKS), 5, num_labels, generator=generator, dtype=torch.float64)
    transitions = torch.randn(num_labels, num_labels, generator=generator, dtype=torch.float64)
    start = torch.randn(num_labels, generator=generator, dtype=torch.float64)
    end = torch.randn(num_labels, generator=generator, dtype=torch.float64)
    return emissions, torch.tensor(MASKS, dtype=torch.bool), transitions, start, end


def on_words(decode, emissions, mask, *args, **kwargs):
    """``decode`` (word level) run on sub-token ``emissions`` whose words are the ``mask`` positions, scattered back."""
    index = word_index_of(mask)
    return scatter_words(decode(gather_words(emissions, index), index >= 0, *args, **kwargs), index, mask.shape)


def test_word_index_gathers_each_rows_words_in_order_and_scatters_back():
    mask = torch.tensor(MASKS, dtype=torch.bool)
    index = word_index_of(mask)
    assert index.shape == (len(MASKS), 5)  # the longest row has 5 words
    assert index[2].tolist() == [5 * 2 + 1, 5 * 2 + 3, 5 * 2 + 4, NO_WORD, NO_WORD]
    assert index[5].tolist() == [NO_WORD] * 5
    assert word_index_of(mask[1:]).shape == (5, 3)  # trimmed to the longest row's words
    assert word_index_of(mask[1:], trim=False).shape == (5, 5)
    values = torch.arange(30).view(6, 5)
    words = gather_words(values, index)
    assert words[2].tolist() == [11, 13, 14, 0, 0]
    assert scatter_words(words, index, values.shape).equal(values.masked_fill(~mask, 0))


def test_word_level_functions_refuse_a_mask_with_holes():
    with pytest.raises(ValueError, match="mask must be True on a prefix of each row"):
        viterbi_decode(torch.zeros(1, 3, 2), torch.tensor([[True, False, True]]), torch.zeros(2, 2), torch.zeros(2), torch.zeros(2))


def forward_loop(emissions, mask, transitions, start, end):
    """The forward algorithm one word at a time: the reference for the parallel scan."""
    alpha = start + emissions[:, 0]
    for t in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha[:, :, None] + transitions, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t, None], step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


@pytest.mark.parametrize("words", [1, 2, 3, 5, 8, 9, 17])
@pytest.mark.parametrize("marginals", [_scan_marginals, _loop_marginals], ids=["scan", "loop"])
def test_scan_and_loop_give_the_forward_algorithms_log_z_and_its_gradient(words, marginals):
    """log Z, the word marginals (d log Z / d emissions) and the expected transitions (d log Z / d transitions) of
    the parallel scan and of the word loop equal the forward algorithm's and what autograd finds through it."""
    generator = torch.Generator().manual_seed(words)
    emissions = torch.randn(4, words, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([words, max(words - 1, 1), 1, (words + 1) // 2])
    mask = torch.arange(words)[None, :] < lengths[:, None]
    forbidden = torch.eye(5, dtype=torch.bool).roll(1, 0)
    transitions = torch.randn(5, 5, generator=generator, dtype=torch.float64).masked_fill(forbidden, FORBIDDEN_SCORE)
    transitions.requires_grad_()
    start, end = torch.randn(4, 5, generator=generator, dtype=torch.float64), torch.randn(4, 5, generator=generator, dtype=torch.float64)
    expected = forward_loop(emissions.masked_fill(~mask[:, :, None], 0), mask, transitions, start, end)
    rows = [torch.autograd.grad(expected[row], [emissions, transitions], allow_unused=True, retain_graph=True) for row in range(4)]
    rows = [(grad_e, torch.zeros(5, 5, dtype=torch.float64) if grad_t is None else grad_t) for grad_e, grad_t in rows]
    with torch.no_grad():
        log_z, word_marginals, moves = marginals(emissions.masked_fill(~mask[:, :, None], 0), mask, transitions, start, end)
    torch.testing.assert_close(log_z, expected.detach())
    torch.testing.assert_close(word_marginals * mask[:, :, None], torch.stack([grad[0][row] for row, grad in enumerate(rows)]))
    torch.testing.assert_close(moves, torch.stack([grad[1] for grad in rows]))


@pytest.mark.parametrize("seed, num_labels", [(0, 3), (1, 4), (2, 5), (3, 3)])
def test_viterbi_matches_brute_force(seed, num_labels):
    emissions, mask, transitions, start, end = random_problem(seed, num_labels)
    decoded = on_words(viterbi_decode, emissions, mask, transitions, start, end)
    assert decoded.dtype == torch.long and decoded.shape == mask.shape
    for row in range(len(MASKS)):
        assert decoded[row][~mask[row]].eq(0).all()
        kept = mask[row].nonzero().flatten()
        if len(kept) == 0:
            continue
        scores = all_scores(emissions[row, kept], transitions, start, end)
        assert tuple(decoded[row, kept].tolist()) == max(scores, key=scores.get)


def test_viterbi_empty_time_and_forbidden_scores():
    no_time = viterbi_decode(
        torch.zeros(2, 0, 3), torch.zeros(2, 0, dtype=torch.bool), torch.zeros(3, 3), torch.zeros(3), torch.zeros(3)
    )
    assert no_time.shape == (2, 0)
    # Label 1 is the best everywhere but forbidden after itself: the path must alternate.
    emissions = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    transitions = torch.tensor([[0.0, 0.0], [0.0, float("-inf")]])
    decoded = viterbi_decode(emissions, torch.ones(1, 3, dtype=torch.bool), transitions, torch.zeros(2), torch.zeros(2))
    assert decoded.tolist() == [[1, 0, 1]]


@pytest.mark.parametrize("algorithm", ["scan", "loop"])
@pytest.mark.parametrize("seed, num_labels, constrained", [(0, 3, False), (1, 4, False), (2, 3, True)])
def test_crf_nll_matches_brute_force(seed, num_labels, constrained, algorithm):
    emissions, mask, _, _, _ = random_problem(seed, num_labels)
    allowed = allowed_transitions(["O", "B", "I"], "IOB2") if constrained else None
    crf = CRF(num_labels, allowed).double()
    crf.algorithm = algorithm
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_()
    generator = torch.Generator().manual_seed(seed)
    tags = torch.randint(0, num_labels, mask.shape, generator=generator)
    if constrained:
        tags[:, :] = torch.tensor([1, 0, 1, 1, 0])  # B and O only: valid wherever the holes fall
    tags[~mask] = -100
    index = word_index_of(mask)
    emissions_words, tag_words, mask_words = gather_words(emissions, index), gather_words(tags, index), index >= 0
    nll = crf.neg_log_likelihood(emissions_words, tag_words, mask_words, reduction="none")
    transitions, start, end = crf.scores(FORBIDDEN_SCORE, torch.float64)
    expected = []
    for row in range(len(MASKS)):
        kept = mask[row].nonzero().flatten()
        if len(kept) == 0:
            expected.append(0.0)
            continue
        scores = all_scores(emissions[row, kept], transitions, start, end)
        log_partition = torch.logsumexp(torch.stack(list(scores.values())), dim=0)
        expected.append((log_partition - scores[tuple(tags[row, kept].tolist())]).item())
    torch.testing.assert_close(nll, torch.tensor(expected, dtype=torch.float64))
    kept_rows = mask.any(1).sum()
    torch.testing.assert_close(crf.neg_log_likelihood(emissions_words, tag_words, mask_words), nll.sum() / kept_rows)
    torch.testing.assert_close(crf.neg_log_likelihood(emissions_words, tag_words, mask_words, reduction="sum"), nll.sum())


def test_crf_gradients_flow_and_forbidden_scores_stay_fixed():
    allowed = allowed_transitions(LABELS["IOB2"], "IOB2")
    crf = CRF(len(LABELS["IOB2"]), allowed)
    emissions = torch.randn(3, 6, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    tags = torch.full((3, 6), -100)
    tags[0, :4] = torch.tensor([1, 2, 0, 3])
    tags[1, :2] = torch.tensor([0, 0])
    emissions_copy = emissions.detach().clone()
    emissions_copy[~mask] = float("nan")  # what sits at skipped positions must not matter
    loss = crf(emissions, tags, mask)
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (emissions.grad, crf.transitions.grad, crf.start_transitions.grad, crf.end_transitions.grad):
        assert grad is not None and torch.isfinite(grad).all()
    assert emissions.grad[~mask].eq(0).all()
    assert crf.transitions.grad[~allowed[0]].eq(0).all()
    assert crf.start_transitions.grad[~allowed[1]].eq(0).all()
    nan_emissions = emissions_copy.requires_grad_()
    crf(nan_emissions, tags, mask).backward()
    torch.testing.assert_close(crf(nan_emissions, tags, mask), loss)
    assert torch.isfinite(nan_emissions.grad).all()


def test_crf_learns_a_toy_problem():
    torch.manual_seed(0)
    labels = LABELS["IOBES"]
    crf = CRF(len(labels), allowed_transitions(labels, "IOBES"))
    emissions = torch.nn.Parameter(torch.zeros(2, 7, len(labels)))
    gold = torch.tensor([[1, 2, 3, 0, 8, 0, 0], [5, 7, 4, 0, -100, -100, -100]])
    mask = gold.ne(-100)
    optimizer = torch.optim.Adam([emissions, *crf.parameters()], lr=0.1)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = crf(emissions, gold, mask)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
    assert crf.decode(emissions, mask).tolist() == gold.masked_fill(~mask, 0).tolist()


def test_crf_refuses_bad_input():
    crf = CRF(3)
    with pytest.raises(ValueError, match=r"tags at kept \(mask True\) positions must be label ids in \[0, 3\)"):
        crf.neg_log_likelihood(torch.zeros(1, 2, 3), torch.tensor([[0, -100]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"emissions must be \[sentences, words, 3\]"):
        crf.decode(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction must be"):
        crf.neg_log_likelihood(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), "avg")
    with pytest.raises(ValueError, match="allowed must be"):
        CRF(3, allowed_transitions(["O", "B", "I", "B-X"], "IOB2"))


@pytest.mark.parametrize("scheme", ["IOB2", "IOBES", "BILOU"])
def test_constrained_decode_is_always_valid(scheme):
    labels = LABELS[scheme]
    generator = torch.Generator().manual_seed(7)
    logits = 3 * torch.randn(64, 8, len(labels), generator=generator)
    mask = torch.rand(64, 8, generator=generator) < 0.7
    decoded = on_words(constrained_decode, logits, mask, allowed_transitions(labels, scheme))
    assert decoded[~mask].eq(0).all()
    unconstrained_valid = 0
    for row in range(len(logits)):
        assert is_valid([labels[i] for i in decoded[row][mask[row]]], scheme)
        unconstrained_valid += is_valid([labels[i] for i in logits[row].argmax(-1)[mask[row]]], scheme)
    assert unconstrained_valid < len(logits) / 2  # the constraint had work to do


@pytest.mark.parametrize(
    "scheme, path",
    [
        ("IOB2", ["B-PER", "I-PER", "O", "B-LOC", "B-PER", "I-PER"]),
        ("IOBES", ["S-LOC", "B-PER", "I-PER", "E-PER", "O", "S-PER"]),
        ("BILOU", ["B-LOC", "L-LOC", "U-PER", "O", "B-PER", "L-PER"]),
    ],
)
def test_constrained_decode_keeps_a_valid_argmax(scheme, path):
    labels = LABELS[scheme]
    gold = torch.tensor([labels.index(tag) for tag in path])
    logits = torch.randn(2, len(path), len(labels), generator=torch.Generator().manual_seed(3))
    logits[:, torch.arange(len(path)), gold] += 10
    # Row 1 keeps the same words with sub-token holes in between.
    holes = torch.randn(2, 2 * len(path), len(labels))
    holes[:, ::2] = logits
    mask = torch.zeros(2, 2 * len(path), dtype=torch.bool)
    mask[:, ::2] = True
    assert is_valid(path, scheme)
    assert constrained_decode(logits, torch.ones(2, len(path), dtype=torch.bool), allowed_transitions(labels, scheme)).tolist() == [
        gold.tolist()
    ] * 2
    decoded = on_words(constrained_decode, holes, mask, allowed_transitions(labels, scheme))
    assert decoded[:, ::2].tolist() == [gold.tolist()] * 2 and decoded[:, 1::2].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_cast_up(dtype):
    labels = LABELS["IOBES"]
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(4, 6, len(labels), generator=generator).to(dtype)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]] * 4, dtype=torch.bool)
    tags = torch.tensor([[1, 3, 0, 4, 0, -100]] * 4)
    assert constrained_decode(logits, mask, allowed_transitions(labels, "IOBES")).equal(
        constrained_decode(logits.float(), mask, allowed_transitions(labels, "IOBES"))
    )
    crf = CRF(len(labels), allowed_transitions(labels, "IOBES"))
    nll = crf(logits, tags, mask)
    assert nll.dtype == torch.float32
    torch.testing.assert_close(nll, crf(logits.float(), tags, mask))
    crf.to(dtype)  # a model cast to half precision as a whole
    nll = crf(logits, tags, mask)
    assert nll.dtype == torch.float32 and torch.isfinite(nll)
    assert crf.decode(logits, mask).equal(crf.float().decode(logits.float(), mask))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    labels = LABELS["BILOU"]
    emissions = torch.randn(8, 10, len(labels))
    mask = torch.arange(10)[None, :] < torch.randint(0, 11, (8, 1))
    tags = torch.randint(0, len(labels), (8, 10)).masked_fill(~mask, -100)
    crf = CRF(len(labels), allowed_transitions(labels, "BILOU"))
    expected_nll, expected_path = crf(emissions, tags, mask), crf.decode(emissions, mask)
    crf.cuda()
    torch.testing.assert_close(crf(emissions.cuda(), tags.cuda(), mask.cuda()).cpu(), expected_nll)
    assert crf.decode(emissions.cuda(), mask.cuda()).cpu().equal(expected_path)
    decoded = constrained_decode(emissions.cuda().half(), mask.cuda(), allowed_transitions(labels, "BILOU"))
    assert decoded.device.type == "cuda"


@pytest.mark.parametrize("algorithm", ["scan", "loop"])
@pytest.mark.parametrize("scheme", ["IOB2", "BILOU"])
def test_likelihood_gradient_is_that_of_autograd_through_the_scan(scheme, algorithm):
    """The CRF's loss brings its own gradient (marginals from one scan up and one down): it must equal what autograd
    finds through the forward algorithm and the gold path's score, for every input, edges per row included."""
    labels = LABELS[scheme]
    generator = torch.Generator().manual_seed(5)
    crf = CRF(len(labels), allowed_transitions(labels, scheme)).double()
    crf.algorithm = algorithm
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    lengths = torch.tensor([7, 1, 4, 0, 6])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    tags = torch.randint(0, len(labels), (5, 7), generator=generator).masked_fill(~mask, -100)
    opens, closes = torch.tensor([True, False, True, True, True]), torch.tensor([True, True, False, True, True])
    emissions = torch.randn(5, 7, len(labels), generator=generator, dtype=torch.float64, requires_grad=True)
    nll = crf.neg_log_likelihood(emissions, tags, mask, reduction="none", opens=opens, closes=closes)
    grads = torch.autograd.grad(nll.sum() * 2, [emissions, *crf.parameters()])

    transitions, start, end = crf.scores(FORBIDDEN_SCORE, torch.float64, opens, closes)
    safe = tags.masked_fill(~mask, 0)
    gold = (emissions.gather(2, safe[:, :, None]).squeeze(2) * mask).sum(1)
    gold = gold + (transitions[safe[:, :-1], safe[:, 1:]] * mask[:, 1:]).sum(1)
    gold = gold + start.gather(1, safe[:, :1]).squeeze(1)
    gold = gold + end.gather(1, safe.gather(1, (lengths - 1).clamp(min=0)[:, None])).squeeze(1)
    reference = torch.where(lengths > 0, forward_loop(emissions.masked_fill(~mask[:, :, None], 0), mask, transitions, start, end) - gold, 0)
    torch.testing.assert_close(nll, reference)
    expected = torch.autograd.grad(reference.sum() * 2, [emissions, *crf.parameters()])
    for grad, wanted in zip(grads, expected):
        torch.testing.assert_close(grad, wanted)
    assert grads[0][3].eq(0).all() and grads[0][~mask].eq(0).all()  # no words, no gradient
