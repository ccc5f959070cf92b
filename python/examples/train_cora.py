"""Train PyG's own two-layer GAT on the Cora graph shipped in data/cora, and save it.

A stand-in for your own training, so that the README's export commands run as written:

    python python/examples/train_cora.py model.pt data.pt

writes ``model.pt`` (the whole ``torch_geometric.nn.models.GAT`` module, ``torch.save``) and
``data.pt`` (a ``torch_geometric.data.Data`` with ``x`` row-normalised, ``edge_index`` and
``y``). Both load with ``torch.load(path, weights_only=False)`` in any process that has PyG.
Run from the repository root. Takes about ten seconds on two cores.
"""
import sys

import numpy as np
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.nn.models import GAT


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python python/examples/train_cora.py MODEL.pt DATA.pt")
    model_path, data_path = sys.argv[1:]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    load = lambda name: torch.from_numpy(np.load(f"data/cora/{name}.npy"))  # noqa: E731
    data = Data(x=load("features").float(), edge_index=load("edges").long(), y=load("labels").long())
    data = T.NormalizeFeatures()(data)
    train_idx, test_idx = load("train_idx").long(), load("test_idx").long()

    # Two GATConv layers: 8 heads x 8 channels (concatenated), ELU, then 8 heads averaged
    # into the 7 classes (PyG's GAT model does not concatenate its last layer).
    model = GAT(data.num_features, 64, num_layers=2, out_channels=7, heads=8, dropout=0.6, act="elu")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
    for _ in range(200):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        torch.nn.functional.cross_entropy(out[train_idx], data.y[train_idx]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(data.x, data.edge_index).argmax(dim=1)
    accuracy = (pred[test_idx] == data.y[test_idx]).float().mean().item()
    print(f"PyG test accuracy: {accuracy:.4f}")
    torch.save(model, model_path)
    torch.save(data, data_path)


if __name__ == "__main__":
    main()
