"""The PITI diffusion's names and numbers that need no torch: the step count, the noise
schedules by name, and GLIDE's respacing of the steps (`space_timesteps`).

Moved out of diffusion.py (which re-exports them) so that a study's sampler settings are
checked without importing torch and diffusers; see diffusion.py for the process itself.
"""

from __future__ import annotations

from typing import Literal

NUM_TIMESTEPS = 1000
ScheduleName = Literal["squaredcos_cap_v2", "linear"]
SCHEDULES: tuple[str, ...] = ("squaredcos_cap_v2", "linear")
BASE_SCHEDULE: ScheduleName = "squaredcos_cap_v2"       # PITI base model (64 px)
UPSAMPLER_SCHEDULE: ScheduleName = "linear"             # PITI upsampler (64 -> 256 px)
# GLIDE's "fast27" respacing, with which PITI samples its upsampler: 10, 10, 3, 2, 2 steps
# from five equal sections, the very noisiest step replaced by T - 3 (fewer DDIM artefacts).
FAST27 = "fast27"


def space_timesteps(num_timesteps: int, spec: int | str) -> tuple[int, ...]:
    """The kept steps of a T-step process, ascending (GLIDE / guided-diffusion semantics).

    `spec`: an int or "N" (N steps evenly spread over [0, T-1], both ends included),
    "a,b,c" (the process cut into equal sections with a, b, c steps each), "ddimN" (the DDIM
    paper's integer stride giving exactly N steps) or "fast27" (GLIDE's upsampler spacing).
    """
    text = str(spec).strip()
    if text == FAST27:
        steps = set(space_timesteps(num_timesteps, "10,10,3,2,2"))
        steps.discard(num_timesteps - 1)
        steps.add(num_timesteps - 3)
        return tuple(sorted(steps))
    if text.startswith("ddim"):
        count = _positive_int(text[len("ddim"):], spec)
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == count:
                return tuple(range(0, num_timesteps, stride))
        raise ValueError(f"respacing {spec!r}: no integer stride gives exactly {count} of "
                         f"{num_timesteps} steps")
    counts = [_positive_int(part, spec) for part in text.split(",")]
    if counts == [1]:
        return (num_timesteps - 1,)  # one step starts from pure noise (see module docstring)
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"respacing {spec!r}: cannot take {count} steps from a section "
                             f"of {size} (T = {num_timesteps})")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        # Python's round (half to even), accumulated as GLIDE does, so the kept set matches.
        position = 0.0
        for _ in range(count):
            steps.append(start + round(position))
            position += stride
        start += size
    return tuple(sorted(set(steps)))


def _positive_int(text: str, spec: int | str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"respacing {spec!r}: expected a step count >= 1, 'a,b,c' section "
                         f"counts, 'ddimN' or '{FAST27}'")
    return value
