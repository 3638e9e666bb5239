"""What every bench script writes around its numbers: the report's header (title, device and versions, date,
command), a Markdown sink written line by line, the time budget that gpu_check.sh hands each step, a table
cell's error text; for the CPU scripts, interleaved timing, the machine and appending to a results file.

No other bench module is imported here (bench_gpu.py, kernel_launches.py and the CPU scripts all import this
one); torch and triton are imported only inside the functions that report their versions.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import time
from collections.abc import Callable

INTERPRETER = "CPU, Triton interpreter (dry run: tiny config, times meaningless)"


def short_error(exc: BaseException, limit: int = 160) -> str:
    """`Type: message` on one line, without `|` (it goes into a table cell), cut to `limit` characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Budget:
    """Wall-clock budget of a script: `left()` seconds remain; the scripts stop starting work past it, so
    that they end on their own before the shell's hard time limit."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def spent(self, reserve: float = 0.0) -> bool:
        return self.left() <= reserve


def default_budget() -> float | None:
    """The budget gpu_check.sh hands a step (MN_BENCH_BUDGET_S), else none."""
    value = os.environ.get("MN_BENCH_BUDGET_S")
    return float(value) if value else None


def add_budget_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-s", type=float, default=default_budget(),
                        help="start no measurement after this many seconds (default: $MN_BENCH_BUDGET_S)")


class Sink:
    """Markdown written line by line and flushed, so that a run cut short keeps every finished line."""

    def __init__(self, path: str | None, mode: str = "w", echo: bool = True):
        self.file = open(path, mode) if path else None
        self.echo = echo

    def __call__(self, line: str = "") -> None:
        if self.echo:
            print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def utc_stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def device_line(cpu: str = INTERPRETER) -> str:
    """`- device: <GPU name, else cpu>; torch, CUDA, triton and python versions`."""
    import torch
    import triton
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu
    return (f"- device: {name}; torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
            f"python {platform.python_version()}")


def open_report(title: str, script: str, argv: list[str], out: str | None, *, mode: str = "w", echo: bool = True,
                cpu: str = INTERPRETER) -> Sink:
    """A Sink on `out` (None: the console only; `mode` and `echo` as Sink's) that has written the report's
    header: `title`, the device line (`cpu`: the device's name without a GPU), the date and the command
    (`script` is the script's __file__, `argv` its arguments)."""
    emit = Sink(out, mode, echo)
    emit(title)
    emit(device_line(cpu))
    emit(f"- date: {utc_stamp()}; command: python bench/{os.path.basename(script)} {shlex.join(argv)}".rstrip())
    return emit


def interleaved_medians(steps: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median ms of each step over `rounds` rounds after one warm-up round; each round runs every step once, in
    turn, so that load on the machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if r:
                times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def machine_lines() -> list[str]:
    """The date and the machine (architecture, cores, torch threads, python and torch versions)."""
    import torch
    return [f"- date: {utc_stamp()}",
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; "
            f"python {platform.python_version()}, torch {torch.__version__}"]


def append_report(text: str, out: str | None) -> None:
    """Appends `text` and a newline to `out`, if given."""
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")
