"""The networks of GSMFlow: nothing but `nn.Module`s."""
from models.classifier import SoftmaxClassifier
from models.flow import ConditionalFlow
from models.relation import RelationNet
from models.relative_positioning import RelativePositioning

__all__ = ["ConditionalFlow", "RelationNet", "RelativePositioning", "SoftmaxClassifier"]
