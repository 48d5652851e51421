"""`encode -c cfg/uniform.cfg [-c more.cfg] -i feat.npy|feat.npz -o out.bin [--Key=value ...] [--trace FILE]`"""

import os
import sys
import time

from common.errors import ConfigError, InputError, exit_code_of

USAGE = """usage: encode -c CFG [-c CFG ...] -i FEATURES -o BITSTREAM [--Key=value ...] [--trace FILE]

FCRS encoder: feature tensors (.npy: N×C tokens, C×H×W or 1×C×H×W; .npz: several
named tensors) -> bitstream. cfg files apply in order, later ones win; --Key=value
options win last; an unknown key is an error.

  -c, --config FILE   encoder configuration (repeatable)
  -i, --input FILE    features to encode (.npy or .npz; float16/32/64)
  -o, --output FILE   bitstream to write (atomically)
  --trace FILE        write every syntax element as 'name  descriptor : value'
  -h, --help          show this help

options (cfg key or --Key=value):
"""


def parse_args(argv):
    """(cfg_paths, input, output, trace, overrides) from the command line."""
    cfgs, overrides = [], []
    paths = {"-i": None, "-o": None, "--trace": None}
    aliases = {"--input": "-i", "--output": "-o", "-c": "-c", "--config": "-c"}
    args = list(argv)
    while args:
        arg = args.pop(0)
        flag = aliases.get(arg, arg)
        if flag in ("-c", "-i", "-o", "--trace"):
            if not args:
                raise ConfigError(f"{arg} needs a value")
            value = args.pop(0)
            if flag == "-c":
                cfgs.append(value)
            else:
                paths[flag] = value
        elif arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            overrides.append((name, value))
        else:
            raise ConfigError(f"unexpected argument '{arg}' (options are --Key=value; see encode --help)")
    if paths["-i"] is None or paths["-o"] is None:
        raise ConfigError("both -i FEATURES and -o BITSTREAM are required (see encode --help)")
    return cfgs, paths["-i"], paths["-o"], paths["--trace"], overrides


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    from encoder.options import help_text
    if not argv or "-h" in argv or "--help" in argv:
        print(USAGE + help_text())
        return 0
    return exit_code_of("encode", lambda: run(*parse_args(argv)))


def run(cfg_paths, input_path, output_path, trace_path, overrides):
    from common.featio import check_output_path, load_features, write_atomically
    from common.syntax import Trace
    from encoder.cfg import resolve_options
    from encoder.encoder import encode_features
    from encoder.featjnd.allocation import StepAllocator

    for path in (output_path, trace_path):
        if path:
            check_output_path(path, [input_path, *cfg_paths])
    if trace_path and os.path.abspath(trace_path) == os.path.abspath(output_path):
        raise InputError("--trace and -o name the same file")
    options = resolve_options(cfg_paths, overrides)
    tensors = load_features(input_path)
    trace = Trace() if trace_path else None
    start = time.perf_counter()
    allocator = StepAllocator(options)
    result = encode_features(tensors, options, step_allocator=allocator, trace=trace)
    write_atomically(output_path, lambda f: f.write(result.stream))
    if trace is not None:
        trace.write(trace_path)
    for r in result.reports:
        shape = "x".join(str(n) for n in r.shape)
        inner = f" ({r.inner_codec}: {r.inner_bits} bits inner stream)" if r.inner_codec else ""
        inner = " (tiles in the preceding tensor's picture)" if r.shared_picture else inner
        print(f"tensor '{r.name}' {shape}: {r.bits} bits{inner}, {r.bits_per_feature_point:.4f} bits/feature point, "
              f"MSE {r.mse:.4g}, {r.seconds:.3f} s")
    if options["Tool"] == "anchor":
        setting = (f"video anchor, InnerCodec {options['InnerCodec']}, AnchorPacking {options['AnchorPacking']}, "
                   f"QP {options['QP']}")
    elif options["Tool"] == "lmsfc":
        setting = f"L-MSFC, models {options['LmsfcModels']}, rate index {options['QP']}"
    else:
        budget = f", noise budget {options['NoiseBudget']:g}" if options["NoiseBudget"] > 0 else ""
        estimators = "".join(f", estimator {os.path.basename(path)}" for path in allocator.estimators_used)
        setting = f"QP {options['QP']}, {options['StepAllocation']} steps{budget}{estimators}"
    print(f"{len(result.stream) * 8} bits written to {output_path} ({setting}, {time.perf_counter() - start:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
