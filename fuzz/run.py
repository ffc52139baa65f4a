"""Run one fuzz target: ``python -m fuzz.run TARGET --seconds N``.

With atheris installed (``pip install atheris``) the target runs under
libFuzzer, coverage-guided, with pymta's modules instrumented; without it,
under hypothesis (random inputs and splices of the seeds). Either way the
run ends with one summary line: executions, coverage (atheris: libFuzzer's
``cov``/``ft`` counters; hypothesis reports none) and findings.

- The seeds (``seeds()`` of the target, inputs taken from the tests) are
  written to ``fuzz/corpus/TARGET/``, where libFuzzer also keeps what it
  finds, so a later run goes on from there (the directory is not
  committed).
- A finding is an exception other than the target's ``EXPECTED`` errors,
  or one call over 1 s (libFuzzer ``-timeout=1``, hypothesis
  ``deadline``) on an input of at most 10 KB (``-max_len=10240``).
  libFuzzer stops at the first and writes the input to
  ``fuzz/findings/TARGET-crash-*`` (or ``-timeout-*``). libFuzzer's
  timeout is wall time, which a loaded machine stretches: a timeout counts
  only when the input, run again uninstrumented, takes over 1 s of CPU;
  otherwise the run says so and goes on.
- ``python -m fuzz.run TARGET --replay FILE...`` runs the target once on
  each file, without instrumentation, and prints the traceback and the time
  taken: the way to study a finding and to check its fix.

Run one fuzzer at a time: each takes a whole core.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent
MAX_LEN = 10240
TIMEOUT_SECONDS = 1

_STATS = re.compile(r"^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_EXECUTED = re.compile(r"^stat::number_of_executed_units: (\d+)")
_UNIT = re.compile(r"Test unit written to (\S+)")


def _target(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz.targets.{name}")


def _checked(target: ModuleType) -> Callable[[bytes], None]:
    """target.one_input with its documented errors (EXPECTED) taken as answers."""
    expected = target.EXPECTED

    def one_input(data: bytes) -> None:
        try:
            target.one_input(data)
        except expected:
            pass

    return one_input


def write_seeds(name: str, corpus: Path) -> int:
    """The target's seeds as files in corpus (named by content); how many."""
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = _target(name).seeds()
    for seed in seeds:
        digest = hashlib.sha1(seed).hexdigest()[:16]
        (corpus / f"seed-{digest}").write_bytes(seed)
    return len(seeds)


def _libfuzzer(name: str, seconds: int, stats: dict[str, int]) -> tuple[int, list[str]]:
    """One libFuzzer child for at most seconds: its exit status and the
    inputs it wrote; stats takes its last counters."""
    corpus = HERE / "corpus" / name
    findings = HERE / "findings"
    findings.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "fuzz.run",
        name,
        "--child",
        str(corpus),
        f"-max_total_time={seconds}",
        f"-timeout={TIMEOUT_SECONDS}",
        f"-max_len={MAX_LEN}",
        f"-artifact_prefix={findings}/{name}-",
        "-print_final_stats=1",
        "-rss_limit_mb=2048",
    ]
    units: list[str] = []
    executed = 0
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        if m := _STATS.match(line):
            executed = int(m.group(1))
            stats["cov"], stats["ft"], stats["corpus"] = (int(g) for g in m.groups()[1:])
        elif m := _EXECUTED.match(line):
            executed = int(m.group(1))
        elif m := _UNIT.search(line):
            units.append(m.group(1))
    stats["executions"] += executed
    return proc.wait(), units


def _cpu_seconds(name: str, path: str) -> float:
    """CPU time of one uninstrumented call on the input at path (the best of 3)."""
    one_input = _checked(_target(name))
    data = Path(path).read_bytes()
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        try:
            one_input(data)
        except Exception:
            pass
        best = min(best, time.process_time() - started)
    return best


def run_atheris(name: str, seconds: int) -> int:
    """libFuzzer in child processes (their counters come on stderr); the summary.

    libFuzzer's -timeout measures wall time, which a loaded machine
    stretches: an input it flags is run again here, and counts as a finding
    only when it takes over 1 s of CPU time; otherwise it is reported as not
    confirmed, and fuzzing goes on for the time left."""
    started = time.monotonic()
    stats = {"executions": 0, "cov": 0, "ft": 0, "corpus": 0}
    found: list[str] = []
    notes: list[str] = []
    while not found:
        left = int(seconds - (time.monotonic() - started))
        if left < 5:
            break
        status, units = _libfuzzer(name, left, stats)
        timeouts = [u for u in units if Path(u).name.startswith(f"{name}-timeout-")]
        for unit in timeouts:
            cpu = _cpu_seconds(name, unit)
            if cpu > TIMEOUT_SECONDS:
                found.append(f"{unit} ({cpu:.2f} s of CPU)")
            else:
                notes.append(f"timeout not confirmed ({cpu:.3f} s of CPU on replay): {unit}")
                Path(unit).unlink()
        found.extend(u for u in units if u not in timeouts)
        if status and not units:
            found.append(f"fuzzer exit status {status}")
        if not units:
            break
    elapsed = time.monotonic() - started
    print(
        f"{name}: atheris, {stats['executions']} executions in {elapsed:.0f} s "
        f"({stats['executions'] / max(elapsed, 1e-9):.0f}/s), coverage: cov {stats['cov']} "
        f"ft {stats['ft']}, corpus {stats['corpus']} inputs, findings: {len(found)}"
        + "".join(f"\n  finding: {f}" for f in found)
        + "".join(f"\n  note: {n}" for n in notes)
    )
    return 1 if found else 0


def child_atheris(name: str, libfuzzer_args: list[str]) -> None:
    """In the child: instrument pymta as the target imports it, then fuzz."""
    import atheris

    with atheris.instrument_imports(include=["pymta"]):
        target = _target(name)
    write_seeds(name, Path(libfuzzer_args[0]))
    atheris.Setup([sys.argv[0], *libfuzzer_args], _checked(target))
    atheris.Fuzz()


def run_hypothesis(name: str, seconds: int) -> int:
    """Without atheris: hypothesis, random bytes and splices of the seeds."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    target = _target(name)
    seeds = target.seeds()
    one_input = _checked(target)

    def splice(seed: bytes, at: int, cut: int, insert: bytes) -> bytes:
        at = at % (len(seed) + 1)
        return (seed[:at] + insert + seed[at + cut :])[:MAX_LEN]

    inputs = st.one_of(
        st.sampled_from(seeds),
        st.builds(
            splice,
            st.sampled_from(seeds),
            st.integers(0, MAX_LEN),
            st.integers(0, 64),
            st.binary(max_size=64),
        ),
        st.binary(max_size=MAX_LEN),
    )
    count = [0]

    @settings(
        max_examples=1000,
        deadline=TIMEOUT_SECONDS * 1000,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def fuzz_once(data: bytes) -> None:
        count[0] += 1
        one_input(data)

    started = time.monotonic()
    found = 0
    while time.monotonic() - started < seconds:
        try:
            fuzz_once()
        except Exception:
            traceback.print_exc()
            found = 1
            break
    elapsed = time.monotonic() - started
    print(
        f"{name}: hypothesis, {count[0]} examples in {elapsed:.0f} s "
        f"({count[0] / max(elapsed, 1e-9):.0f}/s), coverage: not measured, findings: {found}"
    )
    return found


def replay(name: str, files: list[str]) -> int:
    """The target once on each file; the traceback and time of each."""
    one_input = _checked(_target(name))
    failed = 0
    for path in files:
        data = Path(path).read_bytes()
        started = time.monotonic()
        try:
            one_input(data)
        except Exception:
            failed += 1
            print(f"{path}: FINDING after {time.monotonic() - started:.3f} s")
            traceback.print_exc()
            continue
        elapsed = time.monotonic() - started
        slow = " (over the 1 s limit)" if elapsed > TIMEOUT_SECONDS else ""
        failed += bool(slow)
        print(f"{path}: ok, {len(data)} bytes in {elapsed:.3f} s{slow}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[1:2] == ["--child"]:  # TARGET --child LIBFUZZER-ARGS...: see run_atheris
        child_atheris(argv[0], argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default 60)")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "hypothesis"),
        default="auto",
        help="auto: atheris when it is installed, else hypothesis",
    )
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run once on each file")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.target, args.replay)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "hypothesis"
        else:
            engine = "atheris"
    if engine == "atheris":
        return run_atheris(args.target, args.seconds)
    return run_hypothesis(args.target, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
