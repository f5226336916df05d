"""Tests of custom_components.ife.losses against divergences computed by hand with plain math."""

from __future__ import annotations

import math

import pytest
import torch

from custom_components.ife.losses import (
    AUTHORS_BATCH_SIZE,
    IFEBaselineLoss,
    InnerTaskRegularizer,
    InterTaskRegularizer,
    MultiTaskIFELoss,
)

# ---- plain-math references ---------------------------------------------------------------------------------


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def js(p: list[float], q: list[float]) -> float:
    c = [(pi + qi) / 2 for pi, qi in zip(p, q)]
    return (kl(p, c) + kl(q, c)) / 2


def inner_ref(m: list[float], positive: bool, tau: float) -> float:
    target = softmax([v * tau for v in m]) if positive else softmax([v / tau for v in m])
    return kl(target, softmax(m))


def ce_ref(logits: list[float], index: int) -> float:
    return -math.log(softmax(logits)[index])


# ---- InnerTaskRegularizer ------------------------------------------------------------------------------------



def _floats(terms):
    """The loss's logged terms (detached 0-d tensors, never synchronised by the loss itself) as Python floats."""
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in terms.values())
    return {name: float(value) for name, value in terms.items()}

def test_inner_hand_computed_h2():
    # M = [0, 1], tau = 2. Positive target softmax([0, 2]); negative target softmax([0, 0.5])
    p = [1 / (1 + math.e), math.e / (1 + math.e)]
    t_pos = [1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)]
    t_neg = [1 / (1 + math.e**0.5), math.e**0.5 / (1 + math.e**0.5)]
    kl_pos = t_pos[0] * math.log(t_pos[0] / p[0]) + t_pos[1] * math.log(t_pos[1] / p[1])
    kl_neg = t_neg[0] * math.log(t_neg[0] / p[0]) + t_neg[1] * math.log(t_neg[1] / p[1])
    assert kl_pos == pytest.approx(inner_ref([0, 1], True, 2.0)) and kl_pos > 0 and kl_neg > 0

    maps = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    positive = torch.tensor([True, False])
    none = InnerTaskRegularizer(tau=2.0, reduction="none", scale=3.0, negative_weight=0.5)(maps, positive)
    assert none.tolist() == pytest.approx([3 * kl_pos, 3 * 0.5 * kl_neg], rel=1e-5)
    mean = InnerTaskRegularizer(tau=2.0, scale=3.0, negative_weight=0.5)(maps, positive)
    assert float(mean) == pytest.approx(3 * (kl_pos + 0.5 * kl_neg) / 2, rel=1e-5)
    total = InnerTaskRegularizer(tau=2.0, reduction="sum")(maps, torch.tensor([[1], [0]]))  # (B, 1) 0/1 mask
    assert float(total) == pytest.approx(kl_pos + kl_neg, rel=1e-5)


def test_inner_hand_computed_h3_default_tau():
    m = [0.2, 0.9, 0.4]
    out = InnerTaskRegularizer(reduction="none")(torch.tensor([m, m]), torch.tensor([1, 0]))
    assert out.tolist() == pytest.approx([inner_ref(m, True, 5.0), inner_ref(m, False, 5.0)], rel=1e-5)


def test_inner_target_is_detached():
    # with a detached target T, d KL(T || softmax(M)) / dM = softmax(M) - T
    m = [0.3, -0.2, 0.8]
    maps = torch.tensor([m], requires_grad=True)
    InnerTaskRegularizer(tau=5.0, reduction="sum")(maps, torch.tensor([True])).backward()
    p, t = softmax(m), softmax([v * 5 for v in m])
    assert maps.grad[0].tolist() == pytest.approx([pi - ti for pi, ti in zip(p, t)], abs=1e-6)


def test_inner_zero_cases():
    maps = torch.rand(4, 7)
    mask = torch.tensor([True, False, True, False])
    assert float(InnerTaskRegularizer(tau=1.0)(maps, mask)) == pytest.approx(0.0, abs=1e-7)  # no adjustment
    flat = torch.full((4, 7), 0.5)  # a uniform map is its own sharpened and smoothed version
    assert float(InnerTaskRegularizer()(flat, mask)) == pytest.approx(0.0, abs=1e-7)
    assert float(InnerTaskRegularizer()(torch.rand(0, 7), torch.zeros(0, dtype=torch.bool))) == 0.0


def test_inner_sharpening_direction():
    # after a step on the positive term the map's softmax gets sharper (larger max probability)
    maps = torch.tensor([[0.1, 0.6, 0.3]], requires_grad=True)
    InnerTaskRegularizer(reduction="sum")(maps, torch.tensor([True])).backward()
    stepped = maps.detach() - 1.0 * maps.grad
    assert float(stepped.softmax(1).max()) > float(maps.detach().softmax(1).max())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": 0.0}, "tau must be a number > 0, got 0.0"),
        ({"tau": -5}, "got -5"),
        ({"scale": -1.0}, "scale must be a number >= 0, got -1.0"),
        ({"negative_weight": -0.5}, "negative_weight"),
        ({"reduction": "avg"}, "avg"),
    ],
)
def test_inner_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InnerTaskRegularizer(**kwargs)


def test_inner_bad_shapes():
    reg = InnerTaskRegularizer()
    with pytest.raises(ValueError, match=r"attention map of shape \(B, H\), got \(2, 1, 7\)"):
        reg(torch.rand(2, 1, 7), torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"positive must have shape \(2,\)"):
        reg(torch.rand(2, 7), torch.tensor([True, False, True]))


# ---- InterTaskRegularizer ------------------------------------------------------------------------------------


def test_inter_hand_computed_h3():
    a, b = [0.0, 1.0, 2.0], [2.0, 1.0, 0.0]
    p, q = softmax(a), softmax(b)
    c = [(x + y) / 2 for x, y in zip(p, q)]
    expected = 0.5 * sum(x * math.log(x / z) for x, z in zip(p, c))
    expected += 0.5 * sum(y * math.log(y / z) for y, z in zip(q, c))
    assert expected == pytest.approx(js(p, q)) and 0 < expected < math.log(2)

    # second row not selected, and holding NaN: it must neither count nor leak
    maps_a = torch.tensor([a, [float("nan")] * 3])
    maps_b = torch.tensor([b, [0.0, 0.0, 0.0]])
    mask = torch.tensor([True, False])
    assert InterTaskRegularizer(reduction="none")(maps_a, maps_b, mask).tolist() == pytest.approx([expected, 0.0])
    assert float(InterTaskRegularizer()(maps_a, maps_b, mask)) == pytest.approx(expected / 2)  # mean over B = 2
    assert float(InterTaskRegularizer(reduction="sum", scale=10.0)(maps_a, maps_b, mask)) == pytest.approx(
        10 * expected, rel=1e-5
    )
    # nor its gradient: the selected row gets the true one, the other none
    maps_a.requires_grad_(True)
    InterTaskRegularizer(reduction="sum")(maps_a, maps_b, mask).backward()
    assert torch.isfinite(maps_a.grad).all() and maps_a.grad[1].tolist() == [0.0] * 3 and maps_a.grad[0].abs().sum() > 0


def test_inter_symmetric_and_zero_for_equal_maps():
    a, b = torch.rand(3, 5), torch.rand(3, 5)
    mask = torch.ones(3, dtype=torch.bool)
    reg = InterTaskRegularizer(reduction="none")
    assert torch.allclose(reg(a, b, mask), reg(b, a, mask))
    assert torch.allclose(reg(a, a, mask), torch.zeros(3), atol=1e-7)


def test_inter_no_selected_sample_is_exactly_zero():
    a = torch.rand(4, 7, requires_grad=True)
    b = torch.rand(4, 7, requires_grad=True)
    out = InterTaskRegularizer(scale=100.0)(a, b, torch.zeros(4, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(a.grad, torch.zeros_like(a)) and torch.equal(b.grad, torch.zeros_like(b))


def test_inter_gradients_reach_both_maps():
    a = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    b = torch.tensor([[2.0, 1.0, 0.0]], requires_grad=True)
    InterTaskRegularizer()(a, b, torch.tensor([True])).backward()
    assert float(a.grad.abs().sum()) > 0 and float(b.grad.abs().sum()) > 0


def test_inter_bad_inputs():
    reg = InterTaskRegularizer()
    with pytest.raises(ValueError, match=r"same shape, got \(2, 7\) and \(2, 14\)"):
        reg(torch.rand(2, 7), torch.rand(2, 14), torch.tensor([True, True]))
    with pytest.raises(ValueError, match="scale must be a number >= 0"):
        InterTaskRegularizer(scale=-2.0)


# ---- MultiTaskIFELoss ----------------------------------------------------------------------------------------


def _heads(severe_logits, mild_logits, att_s, att_m, att_shared):
    return {
        "severe_logits": torch.tensor(severe_logits),
        "mild_logits": torch.tensor(mild_logits),
        "attention_severe": torch.tensor(att_s),
        "attention_mild": torch.tensor(att_m),
        "attention_shared": torch.tensor(att_shared),
    }


def test_multitask_loss_hand_computed():
    # sample 0: IgA-lambda (severe A = 2, mild lambda = 2); sample 1: kappa only (severe None, mild kappa)
    sl = [[0.1, 0.2, 0.9, -0.3], [0.5, 0.0, 0.0, 0.2]]
    ml = [[0.0, 0.3, 1.1], [0.2, 0.7, -0.1]]
    att_s, att_m = [[0.2, 0.8], [0.5, 0.6]], [[0.7, 0.1], [0.3, 0.9]]
    shared = [[0.1, 0.5, 0.9], [0.4, 0.4, 0.2]]
    heads = _heads(sl, ml, att_s, att_m, shared)
    loss_fn = MultiTaskIFELoss(
        lambda_inner=0.3, tau=5.0, lambda_inter=0.7, inner_scale=2.0, inter_scale=3.0, negative_weight=0.5
    )
    loss = loss_fn(heads, torch.tensor([6, 1]))

    ce_s = (ce_ref(sl[0], 2) + ce_ref(sl[1], 0)) / 2
    ce_m = (ce_ref(ml[0], 2) + ce_ref(ml[1], 1)) / 2
    # severe: sample 0 positive (A), sample 1 negative (None, weight 0.5); mild: both positive
    inner_s = sum(
        2.0 * (inner_ref(maps[0], True, 5) + 0.5 * inner_ref(maps[1], False, 5)) / 2 for maps in (att_s, shared)
    )
    inner_m = sum(2.0 * (inner_ref(maps[0], True, 5) + inner_ref(maps[1], True, 5)) / 2 for maps in (att_m, shared))
    # only sample 0 has both chains; the shared map is the same for both branches, so its JS is 0
    inter = 3.0 * js(softmax(att_s[0]), softmax(att_m[0])) / 2
    expected = ce_s + ce_m + 0.3 * (inner_s + inner_m) + 0.7 * inter
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    terms = loss_fn.last_terms
    assert terms["ce_severe"] == pytest.approx(ce_s, rel=1e-5) and terms["ce_mild"] == pytest.approx(ce_m, rel=1e-5)
    assert terms["inner_severe"] == pytest.approx(inner_s, rel=1e-5)
    assert terms["inner_mild"] == pytest.approx(inner_m, rel=1e-5)
    assert terms["inter"] == pytest.approx(inter, rel=1e-5)
    assert terms["total"] == pytest.approx(expected, rel=1e-5)

    # the target may come as (B, 1) float from a MONAI loader
    assert float(loss_fn(heads, torch.tensor([[6.0], [1.0]]))) == pytest.approx(expected, rel=1e-5)


def test_multitask_loss_last_stage_only_and_branch_stage3_keys():
    heads = _heads([[0.0] * 4], [[0.0] * 3], [[0.2, 0.8]], [[0.7, 0.1]], [[0.1, 0.5, 0.9]])
    target = torch.tensor([3])  # IgG-kappa: positive for both sub-tasks
    only_last = MultiTaskIFELoss(use_stage3_attention=False, inner_scale=1.0, inter_scale=1.0, negative_weight=1.0)
    only_last(heads, target)
    assert only_last.last_terms["inner_severe"] == pytest.approx(inner_ref([0.2, 0.8], True, 5), rel=1e-5)
    # unshared third stage: the loss reads the per-branch maps and adds their JS
    del heads["attention_shared"]
    heads["attention_severe_stage3"] = torch.tensor([[0.1, 0.5, 0.9]])
    heads["attention_mild_stage3"] = torch.tensor([[0.9, 0.5, 0.1]])
    both = MultiTaskIFELoss(inner_scale=1.0, inter_scale=1.0)
    both(heads, target)
    expected_inter = js(softmax([0.2, 0.8]), softmax([0.7, 0.1]))
    expected_inter += js(softmax([0.1, 0.5, 0.9]), softmax([0.9, 0.5, 0.1]))
    assert both.last_terms["inter"] == pytest.approx(expected_inter, rel=1e-5)
    del heads["attention_severe_stage3"]
    with pytest.raises(ValueError, match="attention_shared"):
        both(heads, target)


def test_multitask_loss_inter_only_for_both_chains():
    gen = torch.Generator().manual_seed(0)
    heads = {
        "severe_logits": torch.randn(3, 4, generator=gen),
        "mild_logits": torch.randn(3, 3, generator=gen),
        "attention_severe": torch.rand(3, 7, generator=gen),
        "attention_mild": torch.rand(3, 7, generator=gen),
        "attention_shared": torch.rand(3, 14, generator=gen),
    }
    loss_fn = MultiTaskIFELoss()
    loss_fn(heads, torch.tensor([0, 1, 2]))  # Negative, kappa, lambda: no sample with both chains
    assert loss_fn.last_terms["inter"] == 0.0
    loss_fn(heads, torch.tensor([0, 1, 8]))
    assert loss_fn.last_terms["inter"] > 0.0


def test_multitask_loss_lambdas_zero_is_cross_entropy_only():
    heads = _heads([[0.1, 0.2, 0.9, -0.3]], [[0.0, 0.3, 1.1]], [[0.2, 0.8]], [[0.7, 0.1]], [[0.1, 0.5, 0.9]])
    loss = MultiTaskIFELoss(lambda_inner=0.0, lambda_inter=0.0)(heads, torch.tensor([4]))  # IgG-lambda
    assert float(loss) == pytest.approx(ce_ref([0.1, 0.2, 0.9, -0.3], 1) + ce_ref([0.0, 0.3, 1.1], 2), rel=1e-5)


def test_multitask_loss_without_inner_term_drops_exactly_that_term():
    """The "w/o Reg_inner" ablation (lambda_inner=0): the inner terms are still computed and reported, and not small,
    but the loss is the full loss minus exactly lambda * those terms, and no gradient reaches the maps through them."""
    sl = [[0.1, 0.2, 0.9, -0.3], [0.5, 0.0, 0.0, 0.2]]
    ml = [[0.0, 0.3, 1.1], [0.2, 0.7, -0.1]]
    heads = _heads(sl, ml, [[0.2, 0.8], [0.5, 0.6]], [[0.7, 0.1], [0.3, 0.9]], [[0.1, 0.5, 0.9], [0.4, 0.4, 0.2]])
    target = torch.tensor([6, 1])  # IgA-lambda (both chains), kappa
    scales = {"inner_scale": 2.0, "inter_scale": 3.0}
    full = MultiTaskIFELoss(lambda_inner=0.3, lambda_inter=0.7, **scales)
    ablated = MultiTaskIFELoss(lambda_inner=0.0, lambda_inter=0.7, **scales)
    loss_full, loss_ablated = float(full(heads, target)), float(ablated(heads, target))
    terms = _floats(ablated.last_terms)
    assert terms == pytest.approx({**_floats(full.last_terms), "total": loss_ablated}, rel=1e-6)  # same terms, other total
    inner = terms["inner_severe"] + terms["inner_mild"]
    assert inner > 0.05 and terms["inter"] > 0.01  # a loss that kept either term would differ by far more than rel
    assert loss_ablated == pytest.approx(terms["ce_severe"] + terms["ce_mild"] + 0.7 * terms["inter"], rel=1e-6)
    assert loss_ablated == pytest.approx(loss_full - 0.3 * inner, rel=1e-6)

    # with both regularisers off, the attention maps are not part of the loss at all
    maps = {k: v.clone().requires_grad_() for k, v in heads.items()}
    MultiTaskIFELoss(lambda_inner=0.0, lambda_inter=0.0)(maps, target).backward()
    assert maps["severe_logits"].grad is not None
    assert all(maps[k].grad is None for k in ("attention_severe", "attention_mild", "attention_shared"))
    # and a non-finite map cannot turn a disabled term into NaN (left out, not multiplied by 0)
    maps = {**heads, "attention_severe": torch.tensor([[float("inf"), 0.0], [0.5, 0.6]])}
    loss = MultiTaskIFELoss(lambda_inner=0.0, lambda_inter=0.0)(maps, target)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(terms["ce_severe"] + terms["ce_mild"], rel=1e-6)


def test_multitask_defaults_equal_authors_sum_at_batch_64():
    gen = torch.Generator().manual_seed(3)
    b = AUTHORS_BATCH_SIZE
    heads = {
        "severe_logits": torch.randn(b, 4, generator=gen),
        "mild_logits": torch.randn(b, 3, generator=gen),
        "attention_severe": torch.rand(b, 7, generator=gen),
        "attention_mild": torch.rand(b, 7, generator=gen),
        "attention_shared": torch.rand(b, 14, generator=gen),
    }
    target = torch.randint(0, 9, (b,), generator=gen)
    ours = MultiTaskIFELoss()(heads, target)
    authors = MultiTaskIFELoss(reg_reduction="sum", inner_scale=0.01, inter_scale=100.0)(heads, target)
    assert float(ours) == pytest.approx(float(authors), rel=1e-5)


def test_multitask_loss_gradients_finite():
    heads = {
        "severe_logits": torch.randn(4, 4, requires_grad=True),
        "mild_logits": torch.randn(4, 3, requires_grad=True),
        "attention_severe": torch.rand(4, 2, requires_grad=True),
        "attention_mild": torch.rand(4, 2, requires_grad=True),
        "attention_shared": torch.rand(4, 4, requires_grad=True),
    }
    MultiTaskIFELoss()(heads, torch.tensor([0, 1, 5, 8])).backward()
    for key, value in heads.items():
        assert value.grad is not None and bool(torch.isfinite(value.grad).all()), key
        assert float(value.grad.abs().sum()) > 0, key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lambda_inner": -0.1}, "lambda_inner must be a number >= 0, got -0.1"),
        ({"lambda_inter": -1}, "lambda_inter"),
        ({"tau": 0}, "tau must be a number > 0"),
        ({"reg_reduction": "none"}, "'mean' or 'sum'"),
        ({"inter_scale": -1.0}, "scale must be a number >= 0"),
    ],
)
def test_multitask_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiTaskIFELoss(**kwargs)


def test_multitask_bad_inputs():
    heads = _heads([[0.0] * 4], [[0.0] * 3], [[0.2, 0.8]], [[0.7, 0.1]], [[0.1, 0.5, 0.9]])
    loss_fn = MultiTaskIFELoss()
    with pytest.raises(ValueError, match=r"lack keys \['severe_logits', 'mild_logits'"):
        loss_fn({"logits": torch.zeros(1, 9), "attention": torch.zeros(1, 2)}, torch.tensor([0]))
    with pytest.raises(ValueError, match="forward_heads"):
        loss_fn(torch.zeros(1, 9), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"severe_logits must have shape \(2, 4\)"):
        loss_fn(heads, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        loss_fn(heads, torch.tensor([9]))


# ---- IFEBaselineLoss -----------------------------------------------------------------------------------------


def test_baseline_loss():
    logits = [[0.1, 0.4, -0.2, 0.0, 0.3, 0.0, 0.0, 1.0, -1.0], [0.0] * 9]
    loss_fn = IFEBaselineLoss()
    loss = loss_fn({"logits": torch.tensor(logits)}, torch.tensor([[7.0], [2.0]]))
    expected = (ce_ref(logits[0], 7) + ce_ref(logits[1], 2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert _floats(loss_fn.last_terms) == pytest.approx({"ce": expected, "total": expected}, rel=1e-5)
    with pytest.raises(ValueError, match=r"lack keys \['logits'\]"):
        loss_fn({"severe_logits": torch.zeros(1, 4)}, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(1, 9\)"):
        loss_fn({"logits": torch.zeros(1, 4)}, torch.tensor([0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        IFEBaselineLoss(label_smoothing=1.0)


# ---- the attention odds and the class-evidence target -------------------------------------------------------


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_inner_odds_reads_the_logit_of_the_map():
    m = [0.2, 0.9, 0.5]
    odds = [logit(v) for v in m]
    loss = InnerTaskRegularizer(tau=3.0, distribution="odds")(torch.tensor([m]), torch.tensor([True]))
    assert float(loss) == pytest.approx(kl(softmax([3 * v for v in odds]), softmax(odds)), rel=1e-5)
    # a map pinned at 1 is not flat in the odds reading: its rows still differ, and so does the term
    pinned = torch.tensor([[0.999, 0.9999, 0.999]])
    assert float(InnerTaskRegularizer(tau=3.0)(pinned, torch.tensor([True]))) == pytest.approx(0, abs=1e-6)
    assert float(InnerTaskRegularizer(tau=3.0, distribution="odds")(pinned, torch.tensor([True]))) > 0.1


def test_inner_evidence_target_hand_computed():
    m = [[0.2, 0.9, 0.5], [0.3, 0.3, 0.6]]
    evidence = [[0.0, 2.0, -1.0], [5.0, 0.0, 0.0]]
    reg = InnerTaskRegularizer(distribution="odds", negative_weight=0.5)
    loss = reg(torch.tensor(m), torch.tensor([True, False]), evidence=torch.tensor(evidence))
    positive = kl(softmax(evidence[0]), softmax([logit(v) for v in m[0]]))
    negative = kl([1 / 3] * 3, softmax([logit(v) for v in m[1]]))  # uniform target; the evidence is ignored
    assert float(loss) == pytest.approx((positive + 0.5 * negative) / 2, rel=1e-5)
    # zero when the attention odds are the evidence's distribution and a negative's map is flat
    matched = torch.sigmoid(torch.tensor([evidence[0], [0.4, 0.4, 0.4]]))
    assert float(reg(matched, torch.tensor([True, False]), evidence=torch.tensor(evidence))) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="evidence must have the attention map's shape"):
        reg(torch.tensor(m), torch.tensor([True, False]), evidence=torch.zeros(2, 4))


def test_inter_odds_hand_computed():
    a, b = [0.2, 0.7], [0.6, 0.4]
    loss = InterTaskRegularizer(distribution="odds")(torch.tensor([a]), torch.tensor([b]), torch.tensor([True]))
    assert float(loss) == pytest.approx(js(softmax([logit(v) for v in a]), softmax([logit(v) for v in b])), rel=1e-5)


def test_multitask_loss_evidence_target_reads_the_row_logits():
    # IgG-kappa: severe G (1), mild kappa (1); a Negative
    heads = _heads([[0.0] * 4] * 2, [[0.0] * 3] * 2, [[0.2, 0.8], [0.5, 0.4]], [[0.7, 0.1], [0.3, 0.3]], [[0.5] * 3] * 2)
    heads["severe_row_logits"] = torch.tensor([[[0.0, 1.0], [3.0, 0.0], [0.0, 0.0], [0.0, 0.0]]] * 2)
    heads["mild_row_logits"] = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]] * 2)
    loss_fn = MultiTaskIFELoss(
        lambda_inner=1.0, lambda_inter=0.0, inner_scale=1.0, negative_weight=1.0, use_stage3_attention=False,
        distribution="odds", inner_target="evidence",
    )
    loss_fn(heads, torch.tensor([3, 0]))
    # severe evidence of G against None: [3 - 0, 0 - 1]; mild evidence of kappa: [0 - 1, 2 - 0]
    severe = (kl(softmax([3.0, -1.0]), softmax([logit(0.2), logit(0.8)])) + kl([0.5, 0.5], softmax([logit(0.5), logit(0.4)]))) / 2
    mild = (kl(softmax([-1.0, 2.0]), softmax([logit(0.7), logit(0.1)])) + kl([0.5, 0.5], softmax([0.0, 0.0]))) / 2
    assert loss_fn.last_terms["inner_severe"] == pytest.approx(severe, rel=1e-5)
    assert loss_fn.last_terms["inner_mild"] == pytest.approx(mild, rel=1e-5)
    del heads["mild_row_logits"]
    with pytest.raises(ValueError, match="lack keys \\['mild_row_logits'\\]"):
        loss_fn(heads, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="use_stage3_attention=False"):
        MultiTaskIFELoss(inner_target="evidence")
    with pytest.raises(ValueError, match="distribution must be one of"):
        MultiTaskIFELoss(distribution="probability")
