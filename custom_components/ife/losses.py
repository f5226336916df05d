# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Losses of the multi-task IFE classifier (Shi et al., "A Multi-task Method for Immunofixation Electrophoresis
Image Classification", MICCAI 2023, Eqs. 2-4) and of its 9-class baseline.

An attention map ``M`` (B, H) of the horizontal attention is read as a distribution over the image rows through
a softmax over H. The inner-task term pulls that distribution towards a sharpened copy for positive samples
(a dense band sits at one height) and towards a flattened copy for negative samples; the inter-task term pulls
the severe and mild branches' distributions together for samples with both a heavy and a light chain band.

Reading a map as a distribution (``distribution``): the paper's ``"softmax"`` of the sigmoid map ``M`` itself, whose
values lie in (0, 1), so ``softmax(M)`` is nearly uniform whatever ``M`` holds (at most e : 1 between two rows),
the terms are tiny, and a constant map (in particular a sigmoid pinned at 0 or 1, where no gradient flows) is an
exact minimum of both regularisers; or ``"odds"``: ``softmax(logit(M))``, i.e. proportional to ``M / (1 - M)``,
which spans any contrast and keeps gradients where ``M`` is near 0 or 1.

Target of the inner term for positives (``inner_target``): the paper's ``"sharpened"`` copy of the map itself,
which sharpens whatever peak the map already has (at initialisation: the lane-label strip or an image edge, which
bands have nothing to do with), or ``"evidence"``: ``softmax`` over the rows of the branch's own class evidence,
the head's logit of the true class minus that of None computed row by row (``row_logits`` of
``MultiTaskIFEResNet.forward_heads``; their mean over the rows plus the bias is the head's logit), detached. The
attention is then pulled to the rows that make the gel positive, and negatives to a uniform map.

Scale and reduction: the paper's equations are per-sample divergences. The authors' code sums them over the
batch and multiplies by extra factors (0.01 for the inner term, with negatives weighted 0.5, and 100 for the
inter term), and applies both terms to the last block of the third and of the fourth stage. The regulariser
classes below default to the plain equations (mean over the batch, scale 1, equal weights);
:class:`MultiTaskIFELoss` defaults to the authors' weighting expressed batch-size independently, see there.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.utils import LossReduction, look_up_option
from torch import nn
from torch.nn.modules.loss import _Loss

from custom_components.ife.classes import is_severe_and_mild, split_target, target_to_indices

__all__ = [
    "InnerTaskRegularizer",
    "InterTaskRegularizer",
    "MultiTaskIFELoss",
    "IFEBaselineLoss",
    "AUTHORS_BATCH_SIZE",
    "PAPER_LOSS_SETTINGS",
    "CLASS_EVIDENCE_LOSS_SETTINGS",
]

#: batch size of the paper; the default scales of :class:`MultiTaskIFELoss` reproduce the authors' summed terms
#: at this batch size.
AUTHORS_BATCH_SIZE = 64

#: the paper's regularisers with the authors' scales: the defaults of :class:`MultiTaskIFELoss`, and what
#: ``configs/paper_attention.json`` sets (the reduction stays "mean", see the class)
PAPER_LOSS_SETTINGS = {
    "lambda_inner": 0.3,
    "tau": 5.0,
    "lambda_inter": 0.3,
    "inner_scale": 0.01 * AUTHORS_BATCH_SIZE,
    "inter_scale": 100.0 * AUTHORS_BATCH_SIZE,
    "negative_weight": 0.5,
    "use_stage3_attention": True,
    "distribution": "softmax",
    "inner_target": "sharpened",
}

#: the class-evidence setting (``configs/class_evidence_attention.json``; the ``ife_multitask`` bundle's default from
#: 0.3.0 to 0.7.0): the maps read through their odds, the positives' target their own class evidence, the last stage
#: only, unit scales (see the module docstring). The bundle now trains with the paper's settings and both lambdas 0,
#: the setting that measured best on real gels (its ``docs/README.md``)
CLASS_EVIDENCE_LOSS_SETTINGS = {
    "lambda_inner": 1.0,
    "tau": 5.0,
    "lambda_inter": 0.3,
    "inner_scale": 1.0,
    "inter_scale": 1.0,
    "negative_weight": 1.0,
    "use_stage3_attention": False,
    "distribution": "odds",
    "inner_target": "evidence",
}


def _check_non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    return float(value)


def _check_map(attention: torch.Tensor, name: str) -> None:
    if not isinstance(attention, torch.Tensor) or attention.ndim != 2:
        shape = tuple(attention.shape) if isinstance(attention, torch.Tensor) else type(attention).__name__
        raise ValueError(f"{name} must be an attention map of shape (B, H), got {shape}.")


def _check_mask(mask: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape (B,), got {type(mask).__name__}.")
    if mask.ndim == 2 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 1 or mask.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},) to match the attention map, got {tuple(mask.shape)}.")
    return mask.bool()


DISTRIBUTIONS = ("softmax", "odds")
INNER_TARGETS = ("sharpened", "evidence")


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def _map_logits(attention: torch.Tensor, distribution: str) -> torch.Tensor:
    """The logits whose softmax over the rows is the map's distribution (float32 for AMP)."""
    attention = attention.float()
    if distribution == "odds":
        # logit(M) = log(M / (1 - M)); the clamp bounds it to about +-13.8 where the sigmoid has saturated
        return torch.logit(attention, eps=1e-6)
    return attention


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == LossReduction.SUM.value:
        return per_sample.sum()
    if reduction == LossReduction.MEAN.value:
        # an empty batch gives 0, not NaN
        return per_sample.sum() / max(per_sample.shape[0], 1)
    return per_sample


class InnerTaskRegularizer(_Loss):
    """Inner-task regulariser, Eq. 2 of Shi et al. (MICCAI 2023).

    For each sample with attention map ``M`` (H rows): ``P = softmax(M)`` over the height and a detached target
    ``T = softmax(M * tau)`` for a positive sample (sharper) or ``T = softmax(M / tau)`` for a negative one
    (flatter); the per-sample term is ``KL(T || P) = sum_h T_h (log T_h - log P_h)``, multiplied by
    ``negative_weight`` for negatives and by ``scale`` for all.

    What "positive" means is the caller's: :class:`MultiTaskIFELoss` passes ``severe != None`` for the severe
    branch and ``mild != None`` for the mild branch.

    With ``distribution="odds"`` every ``M`` above reads ``logit(M)``. When the caller passes ``evidence`` (B, H),
    the target of a positive sample is ``softmax(evidence)`` and that of a negative one the uniform distribution
    (``tau`` is then unused); see the module docstring.

    Args:
        tau: temperature, > 0. ``tau > 1`` sharpens positives and flattens negatives as in the paper; ``tau == 1``
            makes the term zero; ``tau < 1`` inverts the roles.
        reduction: ``"mean"`` (sum over the batch divided by B), ``"sum"`` or ``"none"`` ((B,) per sample).
        scale: factor applied to every per-sample term, >= 0.
        negative_weight: extra factor for negative samples, >= 0 (the authors' code uses 0.5).
        distribution: ``"softmax"`` (the paper: softmax of the map) or ``"odds"`` (softmax of its logit).

    Raises:
        ValueError: on ``tau <= 0``, a negative ``scale``/``negative_weight``, an unknown ``reduction`` or
            ``distribution``.
    """

    def __init__(
        self,
        tau: float = 5.0,
        reduction: LossReduction | str = LossReduction.MEAN,
        scale: float = 1.0,
        negative_weight: float = 1.0,
        distribution: str = "softmax",
    ) -> None:
        reduction = look_up_option(reduction, LossReduction).value
        super().__init__(reduction=reduction)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
            raise ValueError(f"tau must be a number > 0, got {tau!r}.")
        self.tau = float(tau)
        self.scale = _check_non_negative(scale, "scale")
        self.negative_weight = _check_non_negative(negative_weight, "negative_weight")
        self.distribution = _check_choice(distribution, DISTRIBUTIONS, "distribution")

    def forward(
        self, attention: torch.Tensor, positive: torch.Tensor, evidence: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            attention: attention map (B, H) (any real values for ``"softmax"``; in (0, 1) for ``"odds"``).
            positive: (B,) or (B, 1) bool or 0/1, True where the sample is positive for this sub-task.
            evidence: optional (B, H) class evidence per row; when given, the positives' target is its softmax
                and the negatives' the uniform distribution.

        Returns:
            a scalar, or (B,) for ``reduction="none"``.

        Raises:
            ValueError: when ``attention`` is not (B, H), ``positive`` does not have B entries or ``evidence`` is
                not shaped like ``attention``.
        """
        _check_map(attention, "attention")
        positive = _check_mask(positive, attention.shape[0], "positive").to(attention.device)
        logits = _map_logits(attention, self.distribution)
        log_p = F.log_softmax(logits, dim=1)  # (B, H)
        with torch.no_grad():
            if evidence is None:
                adjusted = torch.where(positive[:, None], logits * self.tau, logits / self.tau)
            else:
                if evidence.shape != attention.shape:
                    raise ValueError(
                        f"evidence must have the attention map's shape {tuple(attention.shape)}, got "
                        f"{tuple(evidence.shape)}."
                    )
                # zeros are the uniform distribution after the softmax
                adjusted = torch.where(positive[:, None], evidence.float(), torch.zeros_like(logits))
            log_t = F.log_softmax(adjusted, dim=1)  # (B, H), detached target
        kl = (log_t.exp() * (log_t - log_p)).sum(dim=1)  # (B,)
        weight = torch.where(positive, torch.ones_like(kl), torch.full_like(kl, self.negative_weight))
        return _reduce(self.scale * weight * kl, self.reduction)


class InterTaskRegularizer(_Loss):
    """Inter-task regulariser, Eq. 3 of Shi et al. (MICCAI 2023).

    Jensen-Shannon divergence between the severe and mild branches' attention distributions,
    ``JS(P, Q) = (KL(P || C) + KL(Q || C)) / 2`` with ``P = softmax(M_s)``, ``Q = softmax(M_m)`` over the height
    and ``C = (P + Q) / 2``, for the selected samples only (those with both a heavy- and a light-chain band,
    chosen by the caller). Gradients flow into both maps. Unselected samples contribute exactly 0, so a batch
    without any selected sample gives 0 (never NaN).

    Args:
        reduction: ``"mean"`` (sum over the selected samples divided by the WHOLE batch size B, so each selected
            sample weighs ``scale / B`` like a cross-entropy term, whatever the batch's composition),
            ``"sum"`` or ``"none"`` ((B,), zeros for unselected samples).
        scale: factor applied to every per-sample term, >= 0.
        distribution: ``"softmax"`` (the paper: softmax of the maps) or ``"odds"`` (softmax of their logits).

    Raises:
        ValueError: on a negative ``scale``, an unknown ``reduction`` or ``distribution``.
    """

    def __init__(
        self, reduction: LossReduction | str = LossReduction.MEAN, scale: float = 1.0, distribution: str = "softmax"
    ) -> None:
        reduction = look_up_option(reduction, LossReduction).value
        super().__init__(reduction=reduction)
        self.scale = _check_non_negative(scale, "scale")
        self.distribution = _check_choice(distribution, DISTRIBUTIONS, "distribution")

    def forward(self, attention_a: torch.Tensor, attention_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            attention_a: attention map (B, H) of one branch (severe).
            attention_b: attention map (B, H) of the other branch (mild), same shape.
            mask: (B,) or (B, 1) bool or 0/1, True for the samples the term applies to.

        Returns:
            a scalar, or (B,) for ``reduction="none"``.

        Raises:
            ValueError: when the maps are not (B, H) of the same shape or ``mask`` does not have B entries.
        """
        _check_map(attention_a, "attention_a")
        _check_map(attention_b, "attention_b")
        if attention_a.shape != attention_b.shape:
            raise ValueError(
                f"attention maps must have the same shape, got {tuple(attention_a.shape)} and "
                f"{tuple(attention_b.shape)}."
            )
        mask = _check_mask(mask, attention_a.shape[0], "mask").to(attention_a.device)
        # the rows not selected are replaced by a constant map before any arithmetic, so whatever they hold cannot
        # leak a NaN into the value or the gradient; all rows are computed (boolean indexing would make the host
        # wait for the device to count the selected rows, on every training step)
        neutral = torch.full_like(attention_a, 0.5)
        log_p = F.log_softmax(_map_logits(torch.where(mask[:, None], attention_a, neutral), self.distribution), dim=1)
        log_q = F.log_softmax(_map_logits(torch.where(mask[:, None], attention_b, neutral), self.distribution), dim=1)
        log_c = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0, device=log_p.device))
        js = 0.5 * ((log_p.exp() * (log_p - log_c)).sum(dim=1) + (log_q.exp() * (log_q - log_c)).sum(dim=1))
        per_sample = torch.where(mask, self.scale * js, torch.zeros_like(js))  # (B,)
        return _reduce(per_sample, self.reduction)


def _require(heads: Mapping[str, torch.Tensor], keys: tuple[str, ...], owner: str) -> None:
    if not isinstance(heads, Mapping):
        raise ValueError(
            f"{owner} expects the dict returned by network.forward_heads (train with ForwardHeads(network)), "
            f"got {type(heads).__name__}."
        )
    missing = [k for k in keys if k not in heads]
    if missing:
        raise ValueError(f"{owner}: heads lack keys {missing}; got keys {sorted(heads)}.")


def _class_evidence(row_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K, H) row logits -> (B, H) evidence for each sample's true class against None (class 0), detached.

    For a sample whose true class is None the evidence is 0 (it is only used for positives).
    """
    if row_logits.ndim != 3 or row_logits.shape[0] != target.shape[0]:
        raise ValueError(f"row logits must be (B, K, H) with B={target.shape[0]}, got {tuple(row_logits.shape)}.")
    row_logits = row_logits.detach().float()
    true = row_logits.gather(1, target.view(-1, 1, 1).expand(-1, 1, row_logits.shape[2]))[:, 0]
    return true - row_logits[:, 0]


def _check_logits(logits: torch.Tensor, classes: int, batch: int, name: str) -> None:
    if logits.ndim != 2 or logits.shape[1] != classes or logits.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape ({batch}, {classes}) to match the target, got {tuple(logits.shape)}."
        )


class MultiTaskIFELoss(_Loss):
    """Overall objective of Shi et al. (MICCAI 2023), Eq. 4, on the output of ``MultiTaskIFEResNet.forward_heads``:

    ``CE_s + CE_m + lambda_inner * (Reg_inner^s + Reg_inner^m) + lambda_inter * Reg_inter``.

    The 9-class target is split into the severe (None/G/A/M) and mild (None/kappa/lambda) targets. The inner
    term of the severe branch treats ``severe != None`` as positive, the mild branch ``mild != None``. The inter
    term applies to IgX-kappa/lambda samples (both chains), never to Negative, kappa or lambda.

    Attention maps used (as in the authors' code): each branch's last-stage map (``attention_severe``,
    ``attention_mild``, 7 rows at 224 px) and, if ``use_stage3_attention``, the third stage's map (14 rows):
    ``attention_shared`` when that stage is shared (then the inner term sees it once per sub-task, with that
    sub-task's positives, and its inter term is identically 0), or ``attention_severe_stage3`` /
    ``attention_mild_stage3`` otherwise. The stage terms are summed, as the authors do.

    Default scales: the authors' code sums the per-sample terms over a batch of 64 and multiplies the inner sum
    by 0.01 (negatives weighted 0.5) and the inter sum by 100. Summing makes the weight depend on the batch size
    (and, under DDP, on the number of GPUs), so the defaults here use ``reg_reduction="mean"`` with
    ``inner_scale = 0.01 * 64 = 0.64`` and ``inter_scale = 100 * 64 = 6400``: identical to the authors' terms at
    batch size 64, and a per-sample weight independent of the batch size. ``reg_reduction="sum"``,
    ``inner_scale=0.01``, ``inter_scale=100`` reproduces the authors' code exactly; ``inner_scale=1``,
    ``inter_scale=1``, ``negative_weight=1``, ``use_stage3_attention=False`` is Eqs. 2-3 read literally (the
    terms are then about 1e-3 of the cross-entropy, because a softmax of values in (0, 1) is nearly uniform).
    The paper's lambda = 0.3, tau = 5 were tuned with the authors' scales.

    The defaults are the paper's set (:data:`PAPER_LOSS_SETTINGS`); the bundle's ``train.json`` trains with them and
    both lambdas 0, ``configs/class_evidence_attention.json`` with :data:`CLASS_EVIDENCE_LOSS_SETTINGS`.

    ``distribution="odds"`` and ``inner_target="evidence"`` (see the module docstring) are this project's answer to
    the flat maps that the paper's reading gives (measured in the bundle's docs); they need the ``severe_row_logits``
    and ``mild_row_logits`` of ``forward_heads`` and act on the last-stage maps only (the third stage has no class
    evidence of its own), so ``use_stage3_attention`` must then be False.

    After each call, ``last_terms`` holds the unweighted terms (``ce_severe``, ``ce_mild``, ``inner_severe``,
    ``inner_mild``, ``inter``) and the ``total`` as detached 0-d tensors on the loss's device, for logging; they are
    not converted to Python floats here, which would wait for the device on every training step.

    Args:
        lambda_inner: weight of the inner-task terms, >= 0 (0 disables them: the "without Reg_inner" ablation).
        tau: temperature of the inner-task term, > 0.
        lambda_inter: weight of the inter-task term, >= 0 (0 disables it).
        reg_reduction: ``"mean"`` or ``"sum"`` over the batch, for both regularisers (the cross-entropies
            are always means).
        inner_scale: ``scale`` of :class:`InnerTaskRegularizer`.
        inter_scale: ``scale`` of :class:`InterTaskRegularizer`.
        negative_weight: weight of negative samples in the inner term.
        use_stage3_attention: also regularise the third stage's attention maps.
        distribution: how both regularisers read a map as a distribution, ``"softmax"`` (the paper) or ``"odds"``.
        inner_target: the positives' target of the inner term, ``"sharpened"`` (the paper) or ``"evidence"``.

    Raises:
        ValueError: on a negative lambda/scale/weight, ``tau <= 0``, a reduction other than mean/sum, an unknown
            ``distribution``/``inner_target``, or ``inner_target="evidence"`` with ``use_stage3_attention``.
    """

    def __init__(
        self,
        lambda_inner: float = 0.3,
        tau: float = 5.0,
        lambda_inter: float = 0.3,
        reg_reduction: LossReduction | str = LossReduction.MEAN,
        inner_scale: float = 0.01 * AUTHORS_BATCH_SIZE,
        inter_scale: float = 100.0 * AUTHORS_BATCH_SIZE,
        negative_weight: float = 0.5,
        use_stage3_attention: bool = True,
        distribution: str = "softmax",
        inner_target: str = "sharpened",
    ) -> None:
        super().__init__()
        self.inner_target = _check_choice(inner_target, INNER_TARGETS, "inner_target")
        if inner_target == "evidence" and use_stage3_attention:
            raise ValueError(
                "inner_target='evidence' regularises the last-stage maps only (the third stage has no class "
                "evidence of its own): set use_stage3_attention=False."
            )
        reg_reduction = look_up_option(reg_reduction, LossReduction).value
        if reg_reduction == LossReduction.NONE.value:
            raise ValueError("reg_reduction must be 'mean' or 'sum' (the loss is a scalar), got 'none'.")
        self.lambda_inner = _check_non_negative(lambda_inner, "lambda_inner")
        self.lambda_inter = _check_non_negative(lambda_inter, "lambda_inter")
        self.use_stage3_attention = bool(use_stage3_attention)
        self.ce = nn.CrossEntropyLoss()
        self.inner = InnerTaskRegularizer(
            tau=tau, reduction=reg_reduction, scale=inner_scale, negative_weight=negative_weight,
            distribution=distribution,
        )
        self.inter = InterTaskRegularizer(reduction=reg_reduction, scale=inter_scale, distribution=distribution)
        self.last_terms: dict[str, torch.Tensor] = {}

    @staticmethod
    def _stage3_maps(heads: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "attention_shared" in heads:
            return heads["attention_shared"], heads["attention_shared"]
        if "attention_severe_stage3" in heads and "attention_mild_stage3" in heads:
            return heads["attention_severe_stage3"], heads["attention_mild_stage3"]
        raise ValueError(
            "use_stage3_attention=True needs 'attention_shared' or 'attention_severe_stage3' and "
            f"'attention_mild_stage3' in the heads; got keys {sorted(heads)}."
        )

    def forward(self, heads: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            heads: ``MultiTaskIFEResNet.forward_heads`` output: ``severe_logits`` (B, 4), ``mild_logits`` (B, 3),
                ``attention_severe``/``attention_mild`` (B, H/32) and the third-stage maps (B, H/16).
            target: 9-class indices, (B,) or (B, 1), integer or integral float.

        Returns:
            the scalar loss.

        Raises:
            ValueError: on missing keys, shapes that do not match the target, or invalid class indices.
        """
        _require(heads, ("severe_logits", "mild_logits", "attention_severe", "attention_mild"), "MultiTaskIFELoss")
        severe_logits, mild_logits = heads["severe_logits"], heads["mild_logits"]
        target = target.to(severe_logits.device)
        severe_target, mild_target = split_target(target)
        batch = severe_target.shape[0]
        _check_logits(severe_logits, 4, batch, "severe_logits")
        _check_logits(mild_logits, 3, batch, "mild_logits")

        ce_severe = self.ce(severe_logits, severe_target)
        ce_mild = self.ce(mild_logits, mild_target)
        pairs = [(heads["attention_severe"], heads["attention_mild"])]
        if self.use_stage3_attention:
            pairs.append(self._stage3_maps(heads))
        severe_positive, mild_positive = severe_target > 0, mild_target > 0
        both_chains = is_severe_and_mild(target)
        severe_evidence, mild_evidence = None, None
        if self.inner_target == "evidence":
            _require(heads, ("severe_row_logits", "mild_row_logits"), "MultiTaskIFELoss(inner_target='evidence')")
            severe_evidence = _class_evidence(heads["severe_row_logits"], severe_target)
            mild_evidence = _class_evidence(heads["mild_row_logits"], mild_target)

        zero = severe_logits.new_zeros(())
        inner_severe, inner_mild, inter = zero, zero, zero
        for severe_map, mild_map in pairs:
            inner_severe = inner_severe + self.inner(severe_map, severe_positive, severe_evidence)
            inner_mild = inner_mild + self.inner(mild_map, mild_positive, mild_evidence)
            inter = inter + self.inter(severe_map, mild_map, both_chains)

        total = ce_severe + ce_mild
        # a disabled term is left out rather than multiplied by 0, which would turn an inf into NaN
        if self.lambda_inner > 0:
            total = total + self.lambda_inner * (inner_severe + inner_mild)
        if self.lambda_inter > 0:
            total = total + self.lambda_inter * inter
        self.last_terms = {
            name: value.detach()
            for name, value in (
                ("ce_severe", ce_severe),
                ("ce_mild", ce_mild),
                ("inner_severe", inner_severe),
                ("inner_mild", inner_mild),
                ("inter", inter),
                ("total", total),
            )
        }
        return total


class IFEBaselineLoss(_Loss):
    """Cross-entropy of the 9-class baseline (``IFEResNet.forward_heads()["logits"]``) against the 9-class target.

    ``last_terms`` holds ``ce`` and ``total`` after each call, like :class:`MultiTaskIFELoss`.

    Args:
        label_smoothing: passed to :class:`torch.nn.CrossEntropyLoss`, in [0, 1) (0 in the paper).

    Raises:
        ValueError: on ``label_smoothing`` outside [0, 1).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not (
            0 <= label_smoothing < 1
        ):
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.ce = nn.CrossEntropyLoss(label_smoothing=float(label_smoothing))
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, heads: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            heads: ``IFEResNet.forward_heads`` output with ``logits`` (B, 9).
            target: 9-class indices, (B,) or (B, 1), integer or integral float.

        Returns:
            the scalar loss.

        Raises:
            ValueError: on a missing ``logits`` key, a shape mismatch or invalid class indices.
        """
        _require(heads, ("logits",), "IFEBaselineLoss")
        logits = heads["logits"]
        target = target_to_indices(target.to(logits.device))
        _check_logits(logits, 9, target.shape[0], "logits")
        loss = self.ce(logits, target)
        value = loss.detach()
        self.last_terms = {"ce": value, "total": value}
        return loss
