"""Stage 1 for DukeMTMC-reID: the same as prepare.py, with Duke's defaults and naming rule.

Usage:
    python prepare_Duke.py --download_path ../DukeMTMC-reID [--link copy|symlink|hardlink] [--force]

Reads:  ROOT/{bounding_box_train,bounding_box_test,query}/ named PPPP_cC_fFFFFFFF.jpg.
Writes: ROOT/pytorch/{train_all,train,val,query,gallery}/<pid>/<file> (no multi-query: Duke has no gt_bbox).
All the logic lives in prepare.py; this file only selects the benchmark.

A correct run on the toy set prints the same table as prepare.py, e.g.
    split          images  identities  from
    train_all         875         100  bounding_box_train
    ...
    wrote data/DukeMTMC-reID/pytorch (copy) in 0.5 s
"""
import prepare
from utils import cli_main


def build_parser():
    return prepare.build_parser("duke")


@cli_main
def main(argv=None):
    return prepare.run(argv, "duke")


if __name__ == "__main__":
    main()
