"""Losses: the IFE attention regularisers and objective (Eqs. 2-4), the OCT fluid segmentation losses (Eq. 5)."""

from .fluid_seg import FluidLossName, FluidSegLoss, FocalTverskyLoss, WeightedBCELoss, fluid_loss
from .ife_multitask import IFEBaselineLoss, InnerTaskRegularizer, InterTaskRegularizer, MultiTaskIFELoss
