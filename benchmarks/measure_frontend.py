"""Measure an aligned front-end against issue 16's acceptance bars (see speechkeep/align/measure.py).

    python benchmarks/measure_frontend.py model=bundled:smollm2-135m+whisper-tiny.en general=runs/text/heldout.jsonl out=runs/measure_old
    python benchmarks/measure_frontend.py model=runs/align_general/ctc/model general=runs/text/heldout.jsonl out=runs/measure_new

Options are the key=value keys of MeasureConfig (``--help`` lists them). Prints MEASURE.md; writes
measure.json, MEASURE.md and transcripts.jsonl into ``out``. Resumable: the spoken sets are reused.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from speechkeep.align.measure import MeasureConfig, measure_frontend, render
    from speechkeep.config import load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        from speechkeep.config import config_help

        print(__doc__)
        for key, tname, default, doc in config_help(MeasureConfig):
            print(f"  {key} ({tname}, default {default})\n      {doc}")
        return 0
    cfg = load_config(MeasureConfig, None, argv)
    print(render(measure_frontend(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
