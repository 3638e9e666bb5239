"""Analyses of trained Meta-Neighborhoods models: the paper's figures and the helpers they are built from.

Helpers (interpret.py, knn.py): attention_topk, attention_vectors, entry_classes, inner_step_size,
target_cosines, knn_neighbours, knn_predict.

Figures (`mn analyze <what>`, each writing OUT_DIR/<what>.png and <what>.json):
  toy        Fig. 1  learnable neighbours on the two-spirals toy, with an animated GIF   (toy.py)
  cosine     Fig. 3  cos(z_i, w_{y_i}) before vs after the inner step                    (cosine.py)
  ablation   Fig. 4  test metric over a grid of S and gamma                              (ablation.py)
  entries    Fig. 5  the nearest test samples of dictionary entries                      (entries.py)
  induction  Fig. 6  kNN accuracy on fine labels of models trained on coarse ones        (induction.py)
  all        every figure on shipped data, training the models it needs                  (shipped.py)
Plots need matplotlib: pip install "mn[analysis]".
"""
from .interpret import attention_topk, attention_vectors, entry_classes, inner_step_size, target_cosines
from .knn import knn_neighbours, knn_predict

__all__ = ["attention_topk", "attention_vectors", "entry_classes", "inner_step_size", "target_cosines",
           "knn_neighbours", "knn_predict"]
