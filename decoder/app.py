"""`decode -i out.bin -o rec.npy|rec.npz [--trace FILE] [--threads N] [--backend numpy|torch]`"""

import argparse
import os
import sys
import time

from common.errors import exit_code_of


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="decode", description="FCRS decoder: bitstream -> feature tensors. Needs no configuration: "
        "everything comes from the stream. Checks the decoded-feature hash when the stream carries one.")
    parser.add_argument("-i", "--input", required=True, help="FCRS bitstream")
    parser.add_argument("-o", "--output", help="decoded features: .npy (one tensor) or .npz")
    parser.add_argument("--trace", metavar="FILE", help="write every syntax element as 'name  descriptor : value'")
    parser.add_argument("--threads", type=int, default=1, help="tensors decoded in parallel (default 1)")
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                        help="L-MSFC: who evaluates the integer networks' exact float64 products (numpy, or torch "
                        "when installed; the decoded features are identical)")
    parser.add_argument("--max-memory", type=int, default=1024, metavar="MIB",
                        help="memory budget in MiB (default 1024): a stream whose decoding would need more is "
                        "refused before anything is decoded")
    parser.add_argument("--no-hash-check", action="store_true", help="do not check the decoded-feature hash")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return exit_code_of("decode", lambda: run(args))


def run(args):
    # Heavy imports after argument parsing, so that `decode --help` starts fast.
    from common.errors import InputError
    from common.featio import check_output_path, save_features
    from common.syntax import Trace
    from decoder.decoder import decode_stream

    if not os.path.isfile(args.input):
        raise InputError(f"input file not found: {args.input}")
    for path in (args.output, args.trace):
        if path:
            check_output_path(path, [args.input])
    if args.output and args.trace and os.path.abspath(args.output) == os.path.abspath(args.trace):
        raise InputError("--trace and -o name the same file")
    with open(args.input, "rb") as f:
        data = f.read()
    trace = Trace() if args.trace else None
    start = time.perf_counter()
    decoded = decode_stream(data, trace=trace, threads=max(1, args.threads), backend=args.backend,
                            max_memory=args.max_memory << 20)
    seconds = time.perf_counter() - start
    if trace is not None:
        trace.write(args.trace)
    for spec in decoded.specs:
        shape = "x".join(str(n) for n in spec.array_shape)
        print(f"tensor '{spec.name}' {shape} {spec.dtype.name.lower()}")
    failed = False
    if not args.no_hash_check:
        if not decoded.hash_checks:
            print("decode: warning: no integrity check in this stream", file=sys.stderr)
        for check in decoded.hash_checks:
            if check.ok:
                print(f"tensor '{check.name}' [MD5: {check.actual.hex()} OK]")
            else:
                failed = True
                print(f"tensor '{check.name}' ***ERROR*** MD5 mismatch: expected {check.expected.hex()}, "
                      f"decoded {check.actual.hex()}")
    if failed:
        print("decode: error: decoded features do not match the encoder's hash; no output written",
              file=sys.stderr)
        return 1
    if args.output:
        save_features(args.output, decoded.tensors)
    print(f"decoded {len(data) * 8} bits in {seconds:.3f} s" + (f" -> {args.output}" if args.output else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
