#!/usr/bin/env python3
"""Export a sequence encoder from PyTorch as a recsys model bundle served through TorchScript.

The bundle has the same layout as one written by `recsys train`, with `module.pt` in place of
`weights.safetensors`. The module's contract: `forward(items: LongTensor[batch, len]) ->
FloatTensor[batch, dim]`, sequences left-padded with index 0, real items 1..=num_items in the order
of `id_map.json`; scores are dot products with `item_embeddings.safetensors`.

The encoder here is deliberately small (mean of item embeddings over non-padding positions, then
a linear layer): it shows how to serve any model written in Python. `expected.json` records
outputs computed by PyTorch so a test can check the Rust side reproduces them.

usage: export_torchscript.py --out DIR [--num-items N | --item-file PATH] [--dim D] [--seed S]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file


class MeanPoolEncoder(torch.nn.Module):
    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.item_embedding = torch.nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.projection = torch.nn.Linear(dim, dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        mask = (items != 0).unsqueeze(-1).to(torch.float32)
        summed = (self.item_embedding(items) * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1.0)
        return self.projection(summed / counts)


def read_item_ids(item_file: str) -> list:
    with open(item_file, encoding="latin-1") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        column = [name.split(":")[0] for name in header].index("item_id")
        return [line.rstrip("\n").split("\t")[column] for line in handle if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-items", type=int, default=100)
    parser.add_argument("--item-file", help="take item ids from a RecBole .item file")
    parser.add_argument("--dataset", default="ml-100k", help="data set name recorded in config.json")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    item_ids = read_item_ids(args.item_file) if args.item_file else [f"i{n}" for n in range(1, args.num_items + 1)]
    num_items = len(item_ids)
    model = MeanPoolEncoder(num_items, args.dim).eval()
    scripted = torch.jit.script(model)

    os.makedirs(args.out, exist_ok=True)
    scripted.save(os.path.join(args.out, "module.pt"))
    with torch.no_grad():
        item_vectors = model.item_embedding.weight[1:].detach().contiguous().clone()
    save_file({"item_embeddings": item_vectors}, os.path.join(args.out, "item_embeddings.safetensors"))
    with open(os.path.join(args.out, "id_map.json"), "w") as handle:
        json.dump(item_ids, handle)
    config = {
        "format_version": 1,
        "model_name": "meanpool-torchscript",
        "model_version": f"meanpool-torchscript-seed{args.seed}",
        "dataset": args.dataset,
        "scoring": "dot",
        "embedding_dim": args.dim,
        "max_len": args.max_len,
        "num_items": num_items,
        "encoder": {"torchscript": {"file": "module.pt"}},
    }
    with open(os.path.join(args.out, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)
    with open(os.path.join(args.out, "metrics.json"), "w") as handle:
        json.dump({"exported_by": "export_torchscript.py", "torch": torch.__version__}, handle)

    # Reference outputs from PyTorch for a few raw-id sequences of different lengths.
    generator = torch.Generator().manual_seed(args.seed + 1)
    cases = []
    for length in (1, 3, 7, args.max_len):
        indices = torch.randint(1, num_items + 1, (length,), generator=generator)
        with torch.no_grad():
            output = scripted(indices.unsqueeze(0))[0]
        cases.append({"items": [item_ids[i - 1] for i in indices.tolist()], "query": output.tolist()})
    with open(os.path.join(args.out, "expected.json"), "w") as handle:
        json.dump(cases, handle)


if __name__ == "__main__":
    main()
