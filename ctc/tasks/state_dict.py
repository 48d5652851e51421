"""Loading a task network's weights: any mismatch is one InputError line naming the file."""

from __future__ import annotations

from common.errors import InputError


def load_exactly(model, state, label):
    """model.load_state_dict(state) that refuses missing, unexpected or misshapen tensors.
    `label` starts the error line, e.g. "YOLOv5n weight file PATH"."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:      # a tensor of the wrong shape
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise InputError(f"{label} does not fit the model: {detail}") from None
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise InputError(f"{label} does not fit the model: {len(missing)} missing and {len(unexpected)} "
                         f"unexpected keys (e.g. {example!r})")
