"""Token-wise SQ on one large FPN-like tensor: coding efficiency, speed, memory, start-up.

What it measures, on a float32 256×200×304 tensor (the size of the FPN p2 level
of an 800×1216 image, 15,564,800 feature points), at three QPs:

* coding efficiency: the entropy payload's bits (8 × len(tdu_entropy_payload),
  read back from the stream) against the ideal −log2 P sum of the coded symbols
  under the same adaptive models (``EncodeResult.reports[0].ideal_bits``), as an
  overhead in %, with PASS/FAIL against the target (default ≤ 0.05 %);
* encode and decode speed in feature points per second: ``encode_features`` and
  ``decode_stream`` timed inside fresh child processes, as ratios to the throughput
  target (default 10 M points/s, PASS/FAIL), plus the wall time of the
  ``encode`` / ``decode`` console scripts (whole process: start-up, .npy I/O);
* peak memory: the peak RSS (VmHWM) of the child process of each phase (encode
  and decode run in separate processes so the peaks are separate), also as the
  increase over the child's peak just before the timed call (after imports and
  input loading), and the CLI's maximum RSS from ``/usr/bin/time -f %M``;
* the decoder's start-up: wall time of ``decode --help`` and of
  ``python -c "import decoder.decoder"`` (median of 5 runs each; ``python -c
  pass`` is shown as the interpreter's floor);
* with ``--breakdown`` (default on): where the overhead comes from. Each
  primitive kind (binary decisions = constriction Bernoulli, adaptive
  categorical, bypass = Uniform) is coded in its own ANS coder, as in the
  payload, and in constriction's range coder for comparison (the range coder
  loses ~1.3e-4 bits per symbol, which is why the payload uses ANS). This reads
  the encoder's buffered calls (private ``_calls`` / ``_expanded_call`` of
  ``common.tools.tokenwise.sq.TokenwiseEntropyCoder``) and is skipped with a note if
  that changes.

There is no pretrained FPN here, so the tensor is synthesised deterministically
(``--seed``) by :func:`synthesise_fpn_level`: signed, spatially correlated
Gaussian fields (16 shared latent fields smoothed with a Gaussian filter of
σ = 3 px mixed per channel with a channel's own field smoothed with σ = 1.2 px,
so neighbouring positions and channels are correlated), each channel normalised
and scaled by a factor log-uniform over two decades (10^-1.5 .. 10^0.5); 30 % of
the channels are ReLU-like (max(0, x − t) with a threshold t in [0, 1.5] σ,
hence 50–93 % exact zeros), the others get a small per-channel mean.
The default QPs (48, 30, 4) give roughly 0.5, 1.5 and 4 bits per feature point
on it; ``--search`` re-derives them on a central 256×50×76 crop first.

Run (about 2 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_tokenwise.py
    .venv/bin/python benchmarks/bench_tokenwise.py --qps 48,30,4 --no-cli --no-breakdown
    .venv/bin/python benchmarks/bench_tokenwise.py --search
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SHAPE = (256, 200, 304)
TARGET_BPP = (0.5, 1.5, 4.0)
DEFAULT_QPS = "48,30,4"
NAME = ""   # the name the encode CLI gives a lone .npy tensor, so library and CLI streams match


# -- synthetic data -------------------------------------------------------------------

def synthesise_fpn_level(shape=SHAPE, seed=2024, relu_fraction=0.3, latent=16):
    """Deterministic FPN-like float32 C×H×W tensor (see the module docstring)."""
    from scipy.ndimage import gaussian_filter

    channels, height, width = shape
    rng = np.random.default_rng(seed)

    def unit_field(count, sigma):
        field = gaussian_filter(rng.standard_normal((count, height, width)), sigma=(0, sigma, sigma))
        return field / field.std(axis=(1, 2), keepdims=True)

    shared_latent = unit_field(latent, 3.0)
    own = unit_field(channels, 1.2)
    mix = rng.standard_normal((channels, latent)) / np.sqrt(latent)
    shared = np.tensordot(mix, shared_latent, axes=1)
    shared /= shared.std(axis=(1, 2), keepdims=True)
    weight = rng.uniform(0.3, 0.8, channels)[:, None, None]
    x = weight * shared + np.sqrt(1 - weight ** 2) * own
    del shared, own
    scale = 10.0 ** rng.uniform(-1.5, 0.5, channels)
    relu = rng.random(channels) < relu_fraction
    threshold = rng.uniform(0.0, 1.5, channels)
    mean = rng.normal(0.0, 0.3, channels)
    x = np.where(relu[:, None, None], np.maximum(x - threshold[:, None, None], 0.0), x + mean[:, None, None])
    return (x * scale[:, None, None]).astype(np.float32)


# -- child phases (run in fresh processes so each has its own peak RSS) ---------------

def _peak_rss_mib():
    """This process's peak RSS in MiB.

    VmHWM from /proc/self/status where available: on Linux, getrusage's ru_maxrss
    survives execve, so a child started from this (large) benchmark process would
    report the parent's peak; VmHWM belongs to the child's own address space.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _payload_bits(stream):
    """8 × len(tdu_entropy_payload) of the (single) tensor data unit in the stream."""
    from common.codepoints import UnitType
    from common.stream import iter_units
    from common.syntax import SyntaxReader, SyntaxStructure
    from common.syntax_structures import tensor_data_unit

    total = 0
    for unit_type, payload in iter_units(stream):
        if unit_type == UnitType.TENSOR_DATA:
            tdu = SyntaxStructure()
            tensor_data_unit(SyntaxReader(payload), tdu)
            total += 8 * len(tdu.tdu_entropy_payload)
    return total


def child_encode(args):
    from encoder.encoder import encode_features
    from encoder.options import default_options

    x = np.load(args.input)
    options = default_options()
    options.update(QP=args.qp, RoundingOffset=args.offset, DecodedFeatureHash=True)
    baseline = _peak_rss_mib()
    start = time.perf_counter()
    result = encode_features({NAME: x}, options)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mib()
    Path(args.stream).write_bytes(result.stream)
    report = result.reports[0]
    error = result.reconstruction[NAME].astype(np.float64) - x.astype(np.float64)
    out = dict(seconds=seconds, peak_mib=peak, baseline_mib=baseline, stream_bits=8 * len(result.stream),
               tdu_bits=report.bits, payload_bits=_payload_bits(result.stream), ideal_bits=report.ideal_bits,
               num_elements=report.num_elements, mse=report.mse,
               nrmse=float(np.linalg.norm(error) / np.linalg.norm(x.astype(np.float64))),
               zero_levels=float(np.mean(result.reconstruction[NAME] == 0)))
    print(json.dumps(out))


def child_decode(args):
    from decoder.decoder import decode_stream

    data = Path(args.stream).read_bytes()
    baseline = _peak_rss_mib()
    start = time.perf_counter()
    decoded = decode_stream(data)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mib()
    ok = bool(decoded.hash_checks) and all(c.ok for c in decoded.hash_checks)
    print(json.dumps(dict(seconds=seconds, peak_mib=peak, baseline_mib=baseline, hash_ok=ok)))


def run_child(phase, **kwargs):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", phase]
    for key, value in kwargs.items():
        cmd += [f"--{key}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"{phase} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- CLI and start-up timings -----------------------------------------------------------

def console_script(name):
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else shutil.which(name)


def timed_cli(cmd):
    """(wall seconds, max RSS MiB or None) of a command; RSS from /usr/bin/time when present."""
    time_bin = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ([time_bin, "-f", "%e %M", "-o", tf.name] if time_bin else []) + cmd
        start = time.perf_counter()
        done = subprocess.run(full, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
        rss = None
        if time_bin:
            fields = tf.read().split()
            if len(fields) >= 2:
                rss = int(fields[-1]) / 1024.0
    return wall, rss


def median_wall(cmd, runs=5):
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, cwd=REPO, check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), min(walls), max(walls)


# -- overhead breakdown -----------------------------------------------------------------

def overhead_breakdown(x, qp, offset):
    """Per-primitive real vs ideal bits: each kind of coded symbol (binary decision, adaptive
    categorical, bypass) in its own ANS coder, as in the payload, and in constriction's range
    coder for comparison. Reads the encoder's buffered calls (private `_calls` of
    TokenwiseEntropyCoder); returns None if that changes."""
    import constriction

    from common.tools.tokenwise.sq import TokenwiseEntropyCoder
    from encoder.tools.tokenwise.quantiser import quantise

    grid = x.astype(np.float64)
    exponents = np.full(grid.shape[1:], qp, dtype=np.int64)
    levels = quantise(grid, exponents, offset, np.dtype(np.float32))
    del grid
    coder = TokenwiseEntropyCoder(kernel=False)    # the reference buffers every call
    coder.code_tensor(levels, np.zeros(x.shape[1:], dtype=np.int64), x.shape, False)
    if not getattr(coder, "_calls", None) or not hasattr(coder, "_expanded_call"):
        return None
    calls = [coder._expanded_call(*call) for call in coder._calls]
    kinds = {"Bernoulli": "binary (Bernoulli)", "Categorical": "categorical", "Uniform": "bypass (Uniform)"}
    rows = []
    for model_name, label in kinds.items():
        group = [c for c in calls if type(c[1]).__name__ == model_name]
        ideal = sum(_ideal_bits(model_name, symbols, params) for symbols, _, params in group)
        ans = constriction.stream.stack.AnsCoder()
        start = time.perf_counter()
        for symbols, model, params in reversed(group):
            ans.encode_reverse(symbols, model, params)
        ans_seconds = time.perf_counter() - start
        ranged = constriction.stream.queue.RangeEncoder()
        start = time.perf_counter()
        for symbols, model, params in group:
            ranged.encode(symbols, model, params)
        range_seconds = time.perf_counter() - start
        count = sum(len(symbols) for symbols, _, _ in group)
        rows.append((f"{label} ANS", count, 32 * ans.num_words(), ideal, ans_seconds))
        rows.append((f"{label} range", count, 32 * ranged.num_words(), ideal, range_seconds))
    return rows


def _ideal_bits(model_name, symbols, params):
    if model_name == "Bernoulli":
        return float(-np.log2(np.where(symbols == 1, params, 1.0 - params)).sum())
    if model_name == "Categorical":
        chosen = params[np.arange(len(symbols)), symbols]
        return float(-np.log2(chosen / params.sum(axis=1)).sum())
    return float(np.log2(params.astype(np.float64)).sum())


# -- main -----------------------------------------------------------------------------

def search_qps(x, targets):
    from encoder.encoder import encode_features
    from encoder.options import default_options

    c, h, w = x.shape
    crop = np.ascontiguousarray(x[:, h // 2 - h // 8: h // 2 + h // 8, w // 2 - w // 8: w // 2 + w // 8])
    print(f"QP search on the central {'×'.join(map(str, crop.shape))} crop:")
    print(f"{'QP':>5} {'bits/pt':>8}")
    curve = []
    for qp in range(-8, 73, 4):
        options = default_options()
        options["QP"] = qp
        report = encode_features({NAME: crop}, options).reports[0]
        curve.append((qp, report.bits / report.num_elements))
        print(f"{qp:>5} {curve[-1][1]:>8.3f}")
    qps_sorted = np.array([q for q, _ in curve][::-1], dtype=float)     # bpp increases as QP falls
    bpp_sorted = np.array([b for _, b in curve][::-1])
    chosen = [int(round(np.interp(np.log(t), np.log(bpp_sorted), qps_sorted))) for t in targets]
    print("chosen QPs:", ", ".join(f"{q} (~{t} bits/pt)" for q, t in zip(chosen, targets)))
    print()
    return chosen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--qps", default=DEFAULT_QPS, help=f"comma-separated QPs (default {DEFAULT_QPS})")
    ap.add_argument("--search", action="store_true",
                    help="pick the QPs for ~0.5/1.5/4 bits per feature point on a crop first")
    ap.add_argument("--offset", type=float, default=0.5, help="RoundingOffset (default 0.5)")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the synthetic tensor (default 2024)")
    ap.add_argument("--shape", default="x".join(map(str, SHAPE)), help="C×H×W, e.g. 256x200x304")
    ap.add_argument("--target", type=float, default=0.05, help="overhead target in %% (default 0.05)")
    ap.add_argument("--throughput-target", type=float, default=10.0,
                    help="encode and decode target in M feature points/s on one core (default 10)")
    ap.add_argument("--startup-runs", type=int, default=5, help="runs per start-up timing (default 5)")
    ap.add_argument("--no-cli", action="store_true", help="skip the encode/decode console-script runs")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-primitive overhead breakdown")
    ap.add_argument("--workdir", help="folder for the tensor and streams (default: a temporary folder)")
    # internal: child phases
    ap.add_argument("--child", choices=("encode", "decode"), help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--stream", help=argparse.SUPPRESS)
    ap.add_argument("--qp", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child == "encode":
        return child_encode(args)
    if args.child == "decode":
        return child_decode(args)

    shape = tuple(int(n) for n in args.shape.lower().replace("×", "x").split("x"))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fcrs_bench_tokenwise_"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    x = synthesise_fpn_level(shape, args.seed)
    input_path = workdir / "p2.npy"
    np.save(input_path, x)
    n = x.size
    print(f"Synthetic FPN p2-like tensor {'×'.join(map(str, shape))} float32 (seed {args.seed}), "
          f"{n:,} feature points, generated in {time.perf_counter() - start:.1f} s")
    print(f"  std {x.std():.4f}, |x| max {np.abs(x).max():.3f}, exact zeros {np.mean(x == 0) * 100:.1f} %, "
          f"per-channel std {x.std(axis=(1, 2)).min():.4f} .. {x.std(axis=(1, 2)).max():.4f}")
    print(f"  machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, numpy {np.__version__}")
    print()

    qps = search_qps(x, TARGET_BPP) if args.search else [int(q) for q in args.qps.split(",")]

    rows = []
    for qp in qps:
        stream = workdir / f"qp{qp}.bin"
        enc = run_child("encode", input=input_path, stream=stream, qp=qp, offset=args.offset)
        dec = run_child("decode", stream=stream)
        row = dict(qp=qp, enc=enc, dec=dec)
        if not args.no_cli:
            cli_stream = workdir / f"qp{qp}_cli.bin"
            rec = workdir / f"qp{qp}_rec.npy"
            row["cli_enc"] = timed_cli([console_script("encode"), "-c", str(REPO / "cfg" / "uniform.cfg"),
                                        "-i", str(input_path), "-o", str(cli_stream), f"--QP={qp}",
                                        f"--RoundingOffset={args.offset}"])
            row["cli_dec"] = timed_cli([console_script("decode"), "-i", str(cli_stream), "-o", str(rec)])
            row["cli_identical"] = cli_stream.read_bytes() == stream.read_bytes()
            rec.unlink()
            cli_stream.unlink()
        if not args.no_breakdown:
            row["breakdown"] = overhead_breakdown(x, qp, args.offset)
        rows.append(row)
        stream.unlink()

    print(f"Coding efficiency (RoundingOffset {args.offset}; payload = 8 × len(tdu_entropy_payload))")
    print(f"{'QP':>4} {'bits/pt':>8} {'stream bits':>12} {'payload bits':>13} {'ideal bits':>14} "
          f"{'overhead':>11} {'ovh %':>8} {'target':>7}  {'NRMSE':>7} {'zeros':>6}")
    failed = False
    for r in rows:
        e = r["enc"]
        extra = e["payload_bits"] - e["ideal_bits"]
        pct = 100.0 * extra / e["ideal_bits"]
        verdict = "PASS" if pct <= args.target else "FAIL"
        failed |= verdict == "FAIL"
        print(f"{r['qp']:>4} {e['stream_bits'] / n:>8.4f} {e['stream_bits']:>12,} {e['payload_bits']:>13,} "
              f"{e['ideal_bits']:>14,.1f} {extra:>11,.1f} {pct:>7.4f}% {verdict:>7}  {e['nrmse']:>7.4f} "
              f"{e['zero_levels'] * 100:>5.1f}%")
    print(f"(target: overhead ≤ {args.target} %; stream bits add the unit headers, parameter set and MD5 unit)")
    print()

    print("Speed and peak memory (library calls, each phase in a fresh process)")
    print(f"{'QP':>4} {'enc s':>7} {'enc Mpt/s':>10} {'dec s':>7} {'dec Mpt/s':>10} {'dec/enc':>8} "
          f"{'enc peak MiB':>13} {'(+work)':>8} {'dec peak MiB':>13} {'(+work)':>8} {'hash':>5}")
    for r in rows:
        e, d = r["enc"], r["dec"]
        print(f"{r['qp']:>4} {e['seconds']:>7.2f} {n / e['seconds'] / 1e6:>10.3f} {d['seconds']:>7.2f} "
              f"{n / d['seconds'] / 1e6:>10.3f} {d['seconds'] / e['seconds']:>8.2f} {e['peak_mib']:>13.0f} "
              f"{e['peak_mib'] - e['baseline_mib']:>+8.0f} {d['peak_mib']:>13.0f} "
              f"{d['peak_mib'] - d['baseline_mib']:>+8.0f} {'OK' if d['hash_ok'] else 'BAD':>5}")
    print(f"(+work: peak RSS minus the process's peak just before the timed call; "
          f"input float32 = {x.nbytes / 2 ** 20:.0f} MiB, i.e. peak/input "
          f"enc {max(r['enc']['peak_mib'] for r in rows) / (x.nbytes / 2 ** 20):.1f}×, "
          f"dec {max(r['dec']['peak_mib'] for r in rows) / (x.nbytes / 2 ** 20):.1f}×; "
          f"working bytes per feature point: enc "
          f"{max(r['enc']['peak_mib'] - r['enc']['baseline_mib'] for r in rows) * 2 ** 20 / n:.1f}, dec "
          f"{max(r['dec']['peak_mib'] - r['dec']['baseline_mib'] for r in rows) * 2 ** 20 / n:.1f})")
    slow = False
    for r in rows:
        ratios = [n / r[phase]["seconds"] / 1e6 / args.throughput_target for phase in ("enc", "dec")]
        slow |= min(ratios) < 1
        print(f"QP {r['qp']}: throughput / target ({args.throughput_target:g} Mpt/s): encode {ratios[0]:.2f}×, "
              f"decode {ratios[1]:.2f}× {'PASS' if min(ratios) >= 1 else 'FAIL'}")
    print()

    if not args.no_cli:
        print("Console scripts (whole process: start-up, .npy read/write, hash check; RSS from /usr/bin/time)")
        print(f"{'QP':>4} {'encode s':>9} {'Mpt/s':>7} {'max RSS MiB':>12} {'decode s':>9} {'Mpt/s':>7} "
              f"{'max RSS MiB':>12} {'same stream as library':>23}")
        for r in rows:
            (ew, er), (dw, dr) = r["cli_enc"], r["cli_dec"]
            fmt = (lambda v: f"{v:>12.0f}" if v is not None else f"{'n/a':>12}")
            print(f"{r['qp']:>4} {ew:>9.2f} {n / ew / 1e6:>7.3f} {fmt(er)} {dw:>9.2f} {n / dw / 1e6:>7.3f} "
                  f"{fmt(dr)} {'yes' if r['cli_identical'] else 'NO':>23}")
        print()

    runs = args.startup_runs
    print(f"Decoder start-up (wall time, median of {runs}; min .. max)")
    startup = [("decode --help", [console_script("decode"), "--help"]),
               ('python -c "import decoder.decoder"', [sys.executable, "-c", "import decoder.decoder"]),
               ('python -c "pass" (interpreter floor)', [sys.executable, "-c", "pass"])]
    floor = None
    results = []
    for label, cmd in startup:
        med, lo, hi = median_wall(cmd, runs)
        results.append((label, med, lo, hi))
        floor = med
    for label, med, lo, hi in results:
        print(f"  {label:<40} {med * 1000:>7.1f} ms  ({lo * 1000:.1f} .. {hi * 1000:.1f})  "
              f"{med / floor:>5.2f}× the interpreter floor")
    print()

    if not args.no_breakdown:
        print("Overhead breakdown by primitive (each kind coded alone: in ANS, as in the payload, and in "
              "a range coder for comparison; each separate coder adds its own final word)")
        print(f"{'QP':>4} {'primitive':<30} {'symbols':>12} {'real bits':>12} {'ideal bits':>14} "
              f"{'extra':>9} {'extra %':>9} {'bits/symbol':>12} {'coder s':>8} {'ns/symbol':>10}")
        ceilings = []
        for r in rows:
            if r["breakdown"] is None:
                print(f"{r['qp']:>4} (unavailable: TokenwiseEntropyCoder no longer buffers its calls)")
                continue
            for kind, symbols, real, ideal, seconds in r["breakdown"]:
                extra = real - ideal
                pct = 100.0 * extra / ideal if ideal else float("nan")
                per = extra / symbols if symbols else float("nan")
                nanos = 1e9 * seconds / symbols if symbols else float("nan")
                print(f"{r['qp']:>4} {kind:<30} {symbols:>12,} {real:>12,} {ideal:>14,.1f} {extra:>9,.1f} "
                      f"{pct:>8.4f}% {per:>12.2e} {seconds:>8.3f} {nanos:>10.1f}")
            ans_seconds = sum(row[4] for row in r["breakdown"] if row[0].endswith(" ANS"))
            ceilings.append((r["qp"], ans_seconds))
        for qp, seconds in ceilings:
            ceiling = n / seconds / 1e6
            print(f"QP {qp}: the ANS calls alone take {seconds:.2f} s: an encoder that did nothing else would code "
                  f"{ceiling:.1f} Mpt/s, {ceiling / args.throughput_target:.2f}× the target")
        print("(constriction's range coder keeps range in [2^32, 2^64) and narrows it to (range >> 24) × P, "
              "dropping range mod 2^24: ~1e-4 bits per coded symbol whose P is not a power of two, "
              "whatever the symbol's information; bypass pieces (P = 2^-b) keep the range aligned and lose "
              "~nothing. ANS has no such truncation, so the payload uses it.)")
        print()

    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    problems = [text for text, bad in (("overhead above target at some QP", failed),
                                       ("throughput below target at some QP", slow)) if bad]
    print("overall:", f"FAIL ({'; '.join(problems)})" if problems else "PASS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
