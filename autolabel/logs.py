"""What a run prints besides its results: our log lines, and silence from third-party libraries.

Two audiences. At a terminal, progress bars show what is happening and logs stay quiet. Under
cron, systemd or ``--log`` nobody sees a bar, so every stage logs a start line and a finish line
(counts and seconds) and long stages log their progress every ``PROGRESS_EVERY_S`` seconds.
transformers' weight-loading bars, tqdm bars from sae-lens and library FutureWarnings are noise
in both cases and are silenced unless ``-v`` is given.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable

LOGGER = "autolabel"
PROGRESS_EVERY_S = 30.0
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # "Loading weights" bars and advisory warnings
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # sae-lens's trainer bar
    "TOKENIZERS_PARALLELISM": "false",  # the fork warning of the tokenizers library
}

Progress = Callable[[int, int], None]


def configure_output(verbose: int, stderr_is_terminal: bool | None = None) -> None:
    """Set log levels for this process: ``-v`` INFO, ``-vv`` DEBUG, else warnings only, except
    that our own stage lines (INFO) are shown whenever stderr is not a terminal."""
    tty = sys.stderr.isatty() if stderr_is_terminal is None else stderr_is_terminal
    root_level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=root_level, format=_FORMAT)
    ours = logging.getLogger(LOGGER)
    ours.setLevel(min(root_level, logging.INFO) if (verbose or not tty) else root_level)
    if verbose == 0:
        silence_third_party()


def silence_third_party() -> None:
    """Turn off other libraries' progress bars and warnings (set before they are imported)."""
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|torch|"
                                r"sae_lens|sentence_transformers|huggingface_hub)(\.|$)")
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "sae_lens",
                 "datasets", "urllib3", "httpx", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)


def add_log_file(path: str) -> None:
    """Also write our INFO lines (and everyone's warnings) to ``path``."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_FORMAT))
    logging.getLogger().addHandler(handler)
    ours = logging.getLogger(LOGGER)
    ours.setLevel(min(ours.getEffectiveLevel(), logging.INFO))


def stage_logger() -> logging.Logger:
    """The logger stage start/finish lines go to."""
    return logging.getLogger(f"{LOGGER}.run")


def logged_progress(stage: str, sink: Progress, every_s: float = PROGRESS_EVERY_S,
                    clock: Callable[[], float] = time.monotonic) -> Progress:
    """Wrap a progress callback so that long stages also log ``done/total`` now and then."""
    log = stage_logger()
    last = [clock()]

    def update(done: int, total: int) -> None:
        sink(done, total)
        now = clock()
        if now - last[0] >= every_s:
            last[0] = now
            share = f" ({done / total:.0%})" if total else ""
            log.info("%s: %s/%s%s", stage, f"{done:,}", f"{total:,}" if total else "?", share)

    return update
