"""What the analyses need from a trained model: its Meta-Neighborhoods layer and the features its dictionary
lives among. Models are those of mn.training (methods.py): MN image classifiers (backbone + head), vanilla
image classifiers (backbone + output layer), tabular models (MN around the output network, dictionary in
input space)."""
from __future__ import annotations

import torch
from torch import nn

from ..data import Prepared
from ..generic import MetaNeighborhoods, similarity_scores
from ..layers import CosineClassifier, DotClassifier, MetaNeighborhoodsHead
from ..training.methods import MNImageClassifier, MNTabular, Vanilla


class AnalysisError(ValueError):
    """A checkpoint or an argument does not suit the analysis asked for (the message says why)."""


def mn_layer(model, checkpoint) -> MetaNeighborhoodsHead | MetaNeighborhoods:
    """The model's Meta-Neighborhoods layer; AnalysisError naming the checkpoint for a vanilla model."""
    if isinstance(model, MNImageClassifier):
        return model.classifier.head
    if isinstance(model, MNTabular):
        return model.net
    raise AnalysisError(f"checkpoint {checkpoint} holds a vanilla model; this analysis needs a Meta-Neighborhoods "
                        "model (method 'mn')")


@torch.no_grad()
def embed(model, data: Prepared, x: torch.Tensor, *, batch_size: int = 512, device="cpu") -> torch.Tensor:
    """(N, n) features of stored inputs x in the space the dictionary's keys live in: the backbone's output z
    for models with a backbone (MN or vanilla, images or the tabular feature MLPs; in eval mode, as
    `load_trained` returns them), the normalised inputs themselves for the tabular models without one."""
    if isinstance(model, MNImageClassifier):
        net = model.classifier.backbone
    elif isinstance(model, Vanilla) and isinstance(model.net, nn.Sequential) \
            and isinstance(model.net[-1], (CosineClassifier, DotClassifier)):        # backbone + output layer
        net = model.net[0]
    else:
        return x.to(device)
    return torch.cat([net(data.inputs(x[i:i + batch_size]).to(device)) for i in range(0, len(x), batch_size)])


def similarity(layer, queries: torch.Tensor, entries: torch.Tensor | None = None) -> torch.Tensor:
    """(B, E) attention logits of queries over the layer's entries (all S, or the indices `entries`), by the
    similarity its attention uses."""
    keys = layer.keys if entries is None else layer.keys[entries]
    kind = "cosine" if isinstance(layer, MetaNeighborhoodsHead) else layer.similarity
    return similarity_scores(queries, keys, kind, layer.gamma)
