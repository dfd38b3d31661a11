"""bench.py's command line: flags it cannot run with are usage errors, before anything is timed."""
import pytest

import bench
from helpers import run_cli


@pytest.mark.parametrize("flags, message", [
    (["--device", "abc"], "argument --device: 'abc' is not a device"),
    (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["--size", "x"], "argument --size: 'x' is not a whole number"),
    (["--repeats", "0"], "argument --repeats: must be at least 1"),
    (["--warmup", "-1"], "argument --warmup: must be at least 0"),
    (["--end-to-end", "-2"], "argument --end-to-end: must be at least 0"),
    (["--num-workers", "two"], "argument --num-workers: 'two' is not a whole number"),
    (["--pixel", "-1"], "argument --pixel: must be at least 0"),
    (["--folder", "-1"], "argument --folder: must be at least 0"),
    (["--vgg512", "1.5"], "argument --vgg512: '1.5' is not a whole number"),
])
def test_flags_it_cannot_run_with_are_usage_errors(flags, message):
    code, out, err = run_cli(bench.main, flags)
    assert code == 2 and message in err and not out
