"""What each choice of the general front-end's recipe gives (issue 16; see speechkeep/align/ablation.py).

    python benchmarks/frontend_ablation.py run=runs/align_general measure=runs/measure_new out=runs/ablation steps=1000

Options are the key=value keys of AblationConfig (``--help`` lists them). Prints ABLATION.md; writes
ablation.json, ABLATION.md and one CTC run per variant into ``out``. Resumable.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from speechkeep.align.ablation import AblationConfig, render, run_ablation
    from speechkeep.config import load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        from speechkeep.config import config_help

        print(__doc__)
        for key, tname, default, doc in config_help(AblationConfig):
            print(f"  {key} ({tname}, default {default})\n      {doc}")
        return 0
    print(render(run_ablation(load_config(AblationConfig, None, argv))))
    return 0


if __name__ == "__main__":
    from speechkeep.errors import SpeechkeepError

    try:
        sys.exit(main())
    except SpeechkeepError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
