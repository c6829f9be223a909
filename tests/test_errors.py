"""Every usage mistake, argparse's own included, ends in one ``error:`` line, exit 2, no usage block."""
import pytest

import demo
import evaluate_gpu
import prepare
import prepare_Duke
import test as stage4
import toy_data
import train
import utils
from conftest import run_cli


@pytest.mark.parametrize("main, argv, fragment", [
    (train.main, ["--batchsize", "0"], "--batchsize"),
    (train.main, ["--batchsize", "many"], "invalid int value"),
    (train.main, ["--no_such_flag"], "unrecognized arguments"),
    (train.main, ["--fp16", "--bf16"], "--fp16 and --bf16"),
    (demo.main, ["--query_index", "seven"], "--query_index"),
    (stage4.main, ["--batchsize", "0"], "--batchsize"),
    (evaluate_gpu.main, ["--ap", "other"], "--ap"),
    (prepare.main, ["--link", "move"], "--link"),
    (prepare_Duke.main, ["--link", "move"], "--link"),
    (toy_data.main, ["--train_ids", "1"], "--train_ids"),
])
def test_usage_mistakes_are_one_line(main, argv, fragment, capsys):
    code, out, err = run_cli(main, argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0] and "--help" in lines[0]
    assert "usage:" not in err + out


def test_the_help_hint_names_the_script(capsys):
    run_cli(prepare_Duke.main, ["--link", "move"], capsys)
    code, _, err = run_cli(prepare_Duke.main, ["--link", "move"], capsys)
    assert "python prepare_Duke.py --help" in err


def test_long_messages_are_cut_to_a_readable_line(capsys):
    @utils.cli_main
    def fails(argv=None):
        raise utils.UserError("unknown keys " + ", ".join(f"key{i}" for i in range(2000)), "remove them")

    code, _, err = run_cli(fails, [], capsys)
    line = err.strip()
    assert code == 2 and "\n" not in line and len(line) < 2 * utils.MAX_MESSAGE and line.endswith("— remove them")
