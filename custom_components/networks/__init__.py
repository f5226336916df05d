"""Networks: horizontal attention, the IFE multi-task and baseline ResNet18s, the fold ensemble, the 2D TransUNet."""

from .ensemble import ProbabilityEnsemble, load_fold_ensemble
from .horizontal_attention import HorizontalAttention, UniformAttention
from .ife_resnet import ForwardHeads, IFEBasicBlock, IFEResNet, IFEResStage, MultiTaskIFEResNet
from .onnx_network import OnnxRuntimeNetwork
from .transunet import TransformerEncoderBlock, TransUNet
