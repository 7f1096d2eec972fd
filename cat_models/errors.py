"""The exceptions the library raises for input a user can fix.

Every check that runs before training (dataset layout and files, checkpoints, cached artifacts)
raises a subclass of `InputError` whose message starts with the file, folder or field at fault
and says what is wrong, so a caller can print `str(err)` as the one line a user sees and stop.
They are `ValueError`s: the failure is in the input, and retrying cannot make it go away.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names the file or field and what is wrong."""


class DatasetError(InputError):
    """A dataset folder, image, label map or class list that cannot be used."""


class CheckpointError(InputError):
    """A weights file that is missing, unreadable or does not fit the model it is loaded into."""


class CorruptArtifactError(InputError):
    """A cached artifact whose content is not what was written (truncated, half-written)."""


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite ("non-finite loss at iteration N"): the run
    cannot recover, and a retry from the same checkpoint repeats it. Every family's loop
    raises it before the update, so the weights stay finite."""
