"""CPU: a head training step with three inner steps (ft:3) against one (ft:1) on `native` (fused later steps),
beside the references at ft:3 -- the `torch` backend, the plain closed form (bench/plain_closed_form.py: a
B x S x C array of logits per later step) and the literal form (`autograd`) -- float32, interleaved in one
process: each round runs every formulation once, in turn; medians.

    python bench/cpu_later_steps.py [--config 64,2000,20,64] [--rounds 11] [--out F.md]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_torch_vs_plain import make_step  # noqa: E402
from plain_closed_form import plain_adapted_logits  # noqa: E402
from report import append_report, interleaved_medians, machine_lines  # noqa: E402

import mn  # noqa: E402

FORMS = {
    "native ft:1": lambda *a: mn.adapted_logits(*a, gamma=5.0, inner_steps=1, backend="native"),
    "native ft:3": lambda *a: mn.adapted_logits(*a, gamma=5.0, inner_steps=3, backend="native"),
    "torch ft:3": lambda *a: mn.adapted_logits(*a, gamma=5.0, inner_steps=3, backend="torch"),
    "plain closed form ft:3": lambda *a: plain_adapted_logits(*a, gamma=5.0, inner_steps=3),
    "literal (autograd) ft:3": lambda *a: mn.adapted_logits(*a, gamma=5.0, inner_steps=3, backend="autograd"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="64,2000,20,64", help="B,S,C,n")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", help="also append the table to this file")
    args = parser.parse_args(argv)
    mn.set_value_checks(False)
    B, S, C, n = (int(v) for v in args.config.split(","))
    med = interleaved_medians({f: make_step(fn, B, S, C, n) for f, fn in FORMS.items()}, args.rounds)
    base = med["native ft:1"]
    lines = [*machine_lines(),
             f"- (B, S, C, n) = ({args.config}); float32, value checks off; {args.rounds} interleaved rounds after "
             "one warm-up; medians", "",
             "| formulation | ms | x native ft:1 | native ft:3 speed vs it |", "| --- | --- | --- | --- |"]
    for f, ms in med.items():
        vs = f"{ms / med['native ft:3']:.2f}x" if f.endswith("ft:3") and f != "native ft:3" else "-"
        lines.append(f"| {f} | {ms:.1f} | {ms / base:.2f} | {vs} |")
    text = "\n".join(lines) + "\n"
    print(text)
    append_report(text, args.out)


if __name__ == "__main__":
    main()
