"""Alias of `collm stages` (collm_lib.cli), kept for `torchrun --nproc_per_node 4 scripts/run_stages.py ...`."""
import sys
from collm_lib.cli import main
sys.exit(main(["stages", *sys.argv[1:]]))
