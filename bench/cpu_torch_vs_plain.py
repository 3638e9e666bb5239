"""CPU: one head training step (adapted logits, cross-entropy, backward) on the `torch` backend against the plain
closed form (bench/plain_closed_form.py) and the literal form (`autograd`), float32, interleaved in one process:
each round runs every formulation once, in turn, so that load on the machine hits them alike; medians.

    python bench/cpu_torch_vs_plain.py [--configs 128,2000,100,64 32,2000,100,64] [--rounds 15] [--out F.md]
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_closed_form import plain_adapted_logits  # noqa: E402
from report import append_report, interleaved_medians, machine_lines  # noqa: E402

import mn  # noqa: E402


def make_step(logits_fn, B, S, C, n):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, n, generator=g, requires_grad=True)
    keys = (0.1 * torch.randn(S, n, generator=g)).requires_grad_()
    value_logits = (0.1 * torch.randn(S, C, generator=g)).requires_grad_()
    weight = (torch.randn(C, n, generator=g) / n ** 0.5).requires_grad_()
    tau, alpha = torch.tensor(10.0, requires_grad=True), torch.tensor(0.05, requires_grad=True)
    target = torch.randint(0, C, (B,), generator=g)
    params = [z, keys, value_logits, weight, tau, alpha]

    def step():
        values = torch.softmax(value_logits, dim=1)
        logits = logits_fn(z, keys, values, weight, tau, alpha)
        return torch.autograd.grad(F.cross_entropy(logits, target), params)
    return step


FORMS = {
    "torch backend": lambda *a: mn.adapted_logits(*a, gamma=5.0, backend="torch"),
    "plain closed form": lambda *a: plain_adapted_logits(*a, gamma=5.0),
    "literal (autograd)": lambda *a: mn.adapted_logits(*a, gamma=5.0, backend="autograd"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["128,2000,100,64", "32,2000,100,64"], help="B,S,C,n")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--forms", nargs="+", default=list(FORMS))
    parser.add_argument("--out", help="also append the table to this file")
    args = parser.parse_args(argv)
    mn.set_value_checks(False)          # the plain form checks nothing either
    lines = [*machine_lines(),
             f"- float32, value checks off; {args.rounds} interleaved rounds per config after one warm-up round; "
             "medians", "",
             "| B,S,C,n | " + " | ".join(f"{f} ms" for f in args.forms) + " | torch backend speed vs plain |",
             "| --- | " + " | ".join("---" for _ in args.forms) + " | --- |"]
    for cfg in args.configs:
        B, S, C, n = (int(v) for v in cfg.split(","))
        med = interleaved_medians({f: make_step(FORMS[f], B, S, C, n) for f in args.forms}, args.rounds)
        ratio = med["plain closed form"] / med["torch backend"] if {"plain closed form", "torch backend"} <= set(med) \
            else float("nan")
        lines.append(f"| {cfg} | " + " | ".join(f"{med[f]:.1f}" for f in args.forms) + f" | {ratio:.2f}x |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    append_report(text, args.out)


if __name__ == "__main__":
    main()
