"""``python benchmarks/_stage_usage.py run ...``: the ``eegbench`` command of whichever eegbench is
importable (this checkout, or an old revision on ``PYTHONPATH``), with each run stage's CPU time and
page faults (``getrusage``) appended as JSON lines to ``$EEGBENCH_BENCH_USAGE``.

It wraps the runner's stage timer (``eegbench.runner._Timer``), so old revisions that do not record
``stage_resources`` themselves are measured the same way as new ones (used by
``test_main_job_speed.py``).
"""

from __future__ import annotations

import json
import os
import resource
import sys


def _usage() -> dict:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_user_s": r.ru_utime, "cpu_sys_s": r.ru_stime, "minor_faults": r.ru_minflt}


def main() -> int:
    import eegbench.runner as runner

    out = os.environ["EEGBENCH_BENCH_USAGE"]
    timed = runner._Timer.__call__

    def call(self, name):
        ctx = timed(self, name)

        class Measured:
            def __enter__(self):
                self.before = _usage()
                return ctx.__enter__()

            def __exit__(self, *exc):
                result = ctx.__exit__(*exc)
                after = _usage()
                with open(out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"stage": name, **{k: after[k] - self.before[k] for k in after}}) + "\n")
                return result

        return Measured()

    runner._Timer.__call__ = call
    from eegbench.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
