"""The one progress bar of every long step: tqdm on stderr with its ETA, shown also when the
output goes to a log file, since a user who runs a script in the background or on a busy
machine otherwise sees nothing for hours.

On a terminal the bar redraws in place (and a finished one is cleared where `leave` is
False); into a file or pipe it writes a line at most every LOG_INTERVAL_S seconds and keeps
its final line, so a log stays readable and shows each step's end. `show=False` (e.g. every
process of a torchrun run but the first) turns it off.
"""
import sys

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


def progress_bar(iterable=None, *, total=None, desc="", unit="it", show=True, leave=False,
                 initial=0):
    """A tqdm bar over `iterable` (or of `total` steps to `update`), as the module says."""
    on_terminal = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave or not on_terminal,
                initial=initial,
                file=sys.stderr, dynamic_ncols=True, disable=not show,
                mininterval=0.1 if on_terminal else LOG_INTERVAL_S)
