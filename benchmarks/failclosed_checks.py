"""How many face checks fail-closed verification makes on t1 with leaking generators.

Runs InsightFace's t1.jpg (6 people) through the offline stack (dlib detection and verification,
CenterFace coverage, pixelate fallback) with three test generators registered as a plugin:
  leak-all   hands every crop back unchanged (every face goes to the fallback);
  leak-half  leaks the faces with an even index and hides the others (half go to the fallback);
  weak-half  like leak-half, but its `stronger()` copy hides every face (one retry fixes them).
It prints the verifier's calls and the faces they checked, and each face's verdict, so the run can
be compared across versions: `python benchmarks/failclosed_checks.py` in this checkout, and
`PYTHONPATH=/path/to/other/checkout python benchmarks/failclosed_checks.py` for another one.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.config import resolve_config
from rp_core.interfaces import ComponentOptions, Generator
from rp_core.orchestrator import Anonymizer
from rp_core.plugins import PluginHost
from rp_core.types import GenerationRequest


class LeakOptions(ComponentOptions):
    guidance_scale: float = Field(-10.0, ge=-100.0, le=100.0)


class _Leaking(Generator):
    Options: ClassVar[type[ComponentOptions]] = LeakOptions

    def leaks(self, request: GenerationRequest) -> bool:
        raise NotImplementedError

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        from rp_plugins._facemask import face_region

        out = []
        for request in requests:
            crop = np.array(request.face.crop)
            if not self.leaks(request):
                crop[face_region(request.face)] = 128
            out.append(crop)
        return out


class LeakAll(_Leaking):
    name = "bench-leak-all"

    def leaks(self, request: GenerationRequest) -> bool:
        return True


class LeakHalf(_Leaking):
    name = "bench-leak-half"

    def leaks(self, request: GenerationRequest) -> bool:
        return request.face.index % 2 == 0


class WeakHalf(LeakHalf):
    name = "bench-weak-half"

    def leaks(self, request: GenerationRequest) -> bool:
        strong = abs(self.options.guidance_scale) > 12  # type: ignore[attr-defined]
        return not strong and request.face.index % 2 == 0

    def stronger(self, attempt: int, factor: float) -> WeakHalf:
        scale = self.options.guidance_scale * factor**attempt  # type: ignore[attr-defined]
        return WeakHalf(LeakOptions(guidance_scale=scale), self.context)


class BenchPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        for generator in (LeakAll, LeakHalf, WeakHalf):
            register(generator)


def t1_image() -> np.ndarray:
    """t1.jpg from the insightface package data, RGB uint8 (as tests/conftest.py loads it)."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations, "insightface is not installed"
    with Image.open(Path(spec.submodule_search_locations[0]) / "data" / "images" / "t1.jpg") as image:
        return np.asarray(image.convert("RGB")).copy()


def count_checks(verifier: Any) -> list[int]:
    """Counts `verifier.check` from now on: one entry per call, the number of faces it checked."""
    calls: list[int] = []
    check = verifier.check

    def counting(*args: Any, **kwargs: Any) -> Any:
        found = check(*args, **kwargs)
        calls.append(len(found))
        return found

    verifier.check = counting
    return calls


def count(generator: str, image: np.ndarray) -> dict[str, Any]:
    host = PluginHost()
    host.register_plugin(BenchPlugin(), name="bench-leak")
    config = resolve_config(host, preset="offline", overrides=[f"generator.name={generator}"], environ={})
    anonymizer = Anonymizer(config, host)
    anonymizer.load()
    calls = count_checks(anonymizer.verifier)
    start = time.perf_counter()
    result = anonymizer.anonymize(image)
    seconds = time.perf_counter() - start
    verdicts = [
        (r.generator, r.notes["verify"]["retries"], r.notes["verify"]["fallback"], r.notes["verify"]["leak"])
        for r in result.records
    ]
    return {"calls": len(calls), "faces_checked": sum(calls), "seconds": round(seconds, 1), "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", default=["bench-leak-all", "bench-leak-half", "bench-weak-half"])
    args = parser.parse_args()
    import rp_core

    print(f"rp_core from {rp_core.__file__}")
    image = t1_image()
    for generator in args.generators:
        outcome = count(generator, image)
        print(
            f"{generator}: {outcome['calls']} verifier calls, {outcome['faces_checked']} face checks, "
            f"{outcome['seconds']} s; verdicts (generator, retries, fallback, leak): {outcome['verdicts']}"
        )


if __name__ == "__main__":
    main()
