"""nbval plug-in: stderr (warnings, progress bars) never fails an output comparison.

Loaded with ``-p nbval_plugin`` and ``tests`` on PYTHONPATH. Errors still fail: nbval raises on an
error output before it compares anything.
"""

from nbval.plugin import IPyNbCell

_compare_outputs = IPyNbCell.compare_outputs


def _without_stderr(outputs):
    return [o for o in outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]


def compare_outputs(self, test, ref, skip_compare=None):
    return _compare_outputs(self, _without_stderr(test), _without_stderr(ref), skip_compare)


IPyNbCell.compare_outputs = compare_outputs
