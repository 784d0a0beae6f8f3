"""Does ``torch.compile`` pay? The two towers that carry most of OWOD-BIND's FLOPs (see
``bench/results/flops.json``), eager against compiled, on CUDA only (the decision is about GPU
throughput; compiling on a shared CPU machine measures nothing useful).

- ImageBind's vision tower on 64 crops (``embed_vision``, fixed input 224², one batch size);
- SAM's image encoder on 8 frames (``get_image_embeddings``, fixed input 1024²; cmsf runs it in
  chunks of 8).

Each case times the eager call, then ``torch.compile(fn, dynamic=False)`` (first call, i.e. the
compilation, recorded as ``compile_s``) and the compiled call; ``extra_info``: ``eager_s``,
``compiled_s``, ``speedup_compiled``, ``compile_s``, ``max_abs_diff`` (compiled vs eager
output). cmsf does not compile by default (see the README: crop counts and prompt counts vary
per batch, so other stages would recompile or need padding); these figures decide whether a
compiled path for these two fixed-shape towers is worth adding.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import pytest
import torch

from bench.harness import Case, synchronize

ROUNDS = 5


def _median_seconds(fn: Callable[[], Any], device: str) -> float:
    times = []
    for _ in range(ROUNDS):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.parametrize("tower", ["imagebind-vision-64-crops", "sam-image-encoder-8-frames"])
def test_compiled_tower(benchmark, case: Case, models, tower: str) -> None:
    if not case.is_cuda or case.dtype != "bfloat16":
        pytest.skip("torch.compile is measured on CUDA in bfloat16 only (the precision cmsf runs fast in)")
    generator = torch.Generator(device=case.device).manual_seed(0)
    if tower.startswith("imagebind"):
        module = models.imagebind
        inputs = torch.randn(64, 3, 224, 224, device=case.device, generator=generator)

        def eager() -> torch.Tensor:
            return module.embed_vision(inputs)

    else:
        sam = models.sam.model
        side = sam.config.vision_config.image_size
        inputs = torch.randn(8, 3, side, side, device=case.device, generator=generator).to(models.dtype)

        def eager() -> torch.Tensor:
            with torch.no_grad():
                return sam.get_image_embeddings(inputs)

    compiled = torch.compile(eager, dynamic=False)
    eager()  # warm-up
    eager_s = _median_seconds(eager, case.device)
    synchronize(case.device)
    start = time.perf_counter()
    compiled()
    synchronize(case.device)
    compile_s = time.perf_counter() - start
    benchmark.group = f"compile-{tower}"
    out = benchmark.pedantic(compiled, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    compiled_s = _median_seconds(compiled, case.device)
    difference = float((out.float() - eager().float()).abs().max())
    benchmark.extra_info.update(
        {
            "tower": tower, "preset": case.preset, "device": case.device, "dtype": case.dtype,
            "eager_s": eager_s, "compiled_s": compiled_s, "speedup_compiled": eager_s / compiled_s,
            "compile_s": compile_s, "max_abs_diff": difference,
        }
    )  # fmt: skip
