"""The networks of GSMFlow: nothing but `nn.Module`s."""
from models.classifier import SoftmaxClassifier
from models.flow import ConditionalFlow
from models.relative_positioning import RelativePositioning

__all__ = ["ConditionalFlow", "RelativePositioning", "SoftmaxClassifier"]
