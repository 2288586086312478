"""Where a worker's time goes, from py-spy's raw samples (``make bench-stream`` with
``BENCH_PYSPY=folder``, or ``py-spy record --format raw --idle --pid ...``):

    .venv/bin/python benchmarks/stack_shares.py FOLDER/*.txt [--rate CDRS_PER_S]

Each sample of the main thread is put in the first category whose rule matches one of
its frames, looked at from the innermost out; a frame of the rater's own code is matched
by the source line it stands on (the compiled core has no frames of its own: its time
shows on the Python line that calls it, e.g. ``apply(...)``). Samples of other threads
(Faust runs its consumer in one) are counted apart. With ``--rate``, each share is also
shown as microseconds per CDR (the thread's whole time / the CDRs it did).
"""

from __future__ import annotations

import argparse
import linecache
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")

# (category, test on a frame: function, file, source line) — the first match from the leaf out wins
RULES: list[tuple[str, str, str, str]] = [
    # category, function pattern, file pattern, source-line pattern (regexes; "" matches all)
    ("idle: waiting on the sockets", r"^EpollSelector\.select$", "", ""),
    ("metrics", "", r"rater/shell/(metrics|tally)\.py$", ""),
    ("store write (RocksDB, after the commit)", r"^LocalStore\.writing", "", ""),
    ("store reads: usage ids and users (RocksDB)", r"reader$", r"rater/shell/task\.py$", ""),
    ("store reads: usage ids and users (RocksDB)", r"^(TableStore\.get|Store\._get)", "", ""),
    ("records: format and encode outputs and state", r"^(encode|dead_letter)$", r"rater/edge\.py$", ""),
    ("edge: decode and validate (msgspec, times, the Cdr)", "", r"rater/(edge|wire)\.py$", r""),
    ("core: apply (rating, ledger, the compiled core)", "", r"rater/shell/task\.py$", r"\b(apply|on_time)\("),
    ("records: format and encode outputs and state", "", r"rater/shell/task\.py$",
     r"_encoded\(|edge\.encode|encode_state|balance_event|_usage_part|_usage_record|orjson\.dumps|user_value"),
    ("records: format and encode outputs and state", r"^(PartitionTask\.(_encoded|_snapshots|_states|_add_usage)"
     r"|PartitionTask\._encoded\.<locals>\.<listcomp>|encode|encode_state)$", "", ""),
    ("Faust: table writes and their changelog sends", "", r"faust/(tables|stores)/", ""),
    ("Faust: table writes and their changelog sends", r"__setitem__|__delitem__", r"faust_rater\.py$", ""),
    ("producing: output and changelog records, produce requests, transactions", "",
     r"aiokafka/(producer|record/default_records|record/_crecords|record/memory_records)", ""),
    ("producing: output and changelog records, produce requests, transactions", r"^(_add_all|RecordBatches\.)", "",
     ""),
    ("producing: output and changelog records, produce requests, transactions", "", r"faust/transport/producer",
     ""),
    ("producing: output and changelog records, produce requests, transactions", "", r"faust_rater\.py$",
     r"producer\.send|\.flush\("),
    ("aiokafka: fetch and decode consumed records", "", r"aiokafka/(consumer|record)/", ""),
    ("Faust: streams, conductor, acks, commits (per event)", "", r"faust/|mode/", ""),
    ("task: batch bookkeeping", "", r"rater/shell/task\.py$", ""),
    ("driver: unit, transaction calls", "", r"rater/shell/(driver|batches|fetching|store)\.py$", ""),
    ("network: socket reads and writes (asyncio, aiokafka conn)", "", r"asyncio/(selector_events|streams)\.py$|"
     r"aiokafka/(conn|client)\.py$", ""),
]
COMPILED = [(category, re.compile(fn), re.compile(f), re.compile(src)) for category, fn, f, src in RULES]


def categorise(frames: list[str]) -> str:
    """The category of one sample (its frames root first)."""
    for frame in reversed(frames):
        match = FRAME.match(frame)
        if match is None:
            continue
        function, file, line = match["function"], match["file"], int(match["line"])
        source = ""
        for category, fn, f, src in COMPILED:
            if not fn.search(function) or not f.search(file):
                continue
            if src.pattern:
                if not source:
                    path = file if file.startswith("/") else str(ROOT / file)
                    source = linecache.getline(path, line)
                if not src.search(source):
                    continue
            return category
    return "other: event loop, asyncio"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rate", type=float, help="the process's CDRs/s in the profiled run")
    args = parser.parse_args()
    for path in args.files:
        shares: Counter[str] = Counter()
        others: Counter[str] = Counter()
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            (others if any(f.startswith("Thread._bootstrap") for f in frames[:2]) else shares)[categorise(frames)] \
                += int(count)
        total = sum(shares.values())
        print(f"{path.name}: {total} samples of the main thread"
              f" ({sum(others.values())} of other threads)")
        for category, n in shares.most_common():
            per_cdr = f"  {n / total * 1e6 / args.rate:6.1f} µs/CDR" if args.rate else ""
            print(f"  {n / total:6.1%}{per_cdr}  {category}")
        if others:
            rest = sum(others.values())
            print("  other threads:", ", ".join(f"{c} {n / rest:.0%}" for c, n in others.most_common(4)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
