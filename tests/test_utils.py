"""utils.py: the naming-rule parsers, the error wrapper, device choice and seeding."""
import random

import numpy as np
import pytest
import torch

import utils
from reid.datasets import DISTRACTOR_PID, JUNK_PID, parse_image_name
from reid.names import NameRuleError, parse_duke_name, parse_market_name
from utils import UserError


@pytest.mark.parametrize("name, pid, cam, seq, frame", [
    ("0002_c1s1_000451_03.jpg", 2, 1, 1, 451),
    ("1501_c6s4_001877_00.jpg", 1501, 6, 4, 1877),
    ("-1_c3s2_012345_01.jpg", -1, 3, 2, 12345),
    ("0000_c5s3_065712_02.jpg", 0, 5, 3, 65712),
    ("0007_c12s1_000001_01.jpg", 7, 12, 1, 1),            # multi-digit camera
    ("some/dir/0002_c1s1_000451_03.jpg", 2, 1, 1, 451),   # a path: the base name is parsed
])
def test_market_names(name, pid, cam, seq, frame):
    parsed = parse_market_name(name)
    assert (parsed.pid, parsed.camid, parsed.sequence, parsed.frame) == (pid, cam, seq, frame)
    assert parsed.label == name.split("/")[-1].split("_")[0]
    assert (parsed.pid == JUNK_PID) == (pid == -1) and (parsed.pid == DISTRACTOR_PID) == (pid == 0)


@pytest.mark.parametrize("name", [
    "0001_c2_f0046182.jpg",          # a Duke name
    "2_c1s1_000451_03.jpg",          # pid not four digits
    "00002_c1s1_000451_03.jpg",
    "-2_c1s1_000451_03.jpg",         # only -1 is allowed below zero
    "0002_c0s1_000451_03.jpg",       # cameras start at 1
    "0002_c1s0_000451_03.jpg",
    "0002_c1s1_00451_03.jpg",        # frame is six digits
    "0002_c1s1_000451_03.png",
    "0002_c1s1_000451_03.jpg.bak",
    "Thumbs.db",
])
def test_market_rejects_and_names_the_file(name):
    with pytest.raises(NameRuleError) as caught:
        parse_market_name(name)
    assert name in str(caught.value) and "Market-1501" in str(caught.value)


@pytest.mark.parametrize("name, pid, cam, frame", [
    ("0001_c2_f0046182.jpg", 1, 2, 46182),
    ("7140_c8_f0120000.jpg", 7140, 8, 120000),
    ("0005_c10_f0000001.jpg", 5, 10, 1),
])
def test_duke_names(name, pid, cam, frame):
    parsed = parse_duke_name(name)
    assert (parsed.pid, parsed.camid, parsed.frame) == (pid, cam, frame)


@pytest.mark.parametrize("name", ["0002_c1s1_000451_03.jpg", "0001_c2_f046182.jpg", "-1_c2_f0046182.jpg",
                                  "0001_c0_f0046182.jpg", "0001_2_f0046182.jpg"])
def test_duke_rejects(name):
    with pytest.raises(NameRuleError, match="DukeMTMC-reID"):
        parse_duke_name(name)


@pytest.mark.parametrize("name, label, camid, frame", [
    ("0002_c1s1_000451_03.jpg", "0002", 1, 451), ("0001_c2_f0046182.jpg", "0001", 2, 46182),
    ("0000_000_01_0303morning_0015_0.jpg", "0000", 1, 15), ("3059_044_15_0113afternoon_1031_1.jpg", "3059", 15, 1031),
    ("0001_c1_1.png", "0001", 1, 1), ("0767_c2_10.png", "0767", 2, 10),
    ("0002_c002_00030600_0.jpg", "0002", 2, 30600), ("0776_c020_00104385_1.jpg", "0776", 20, 104385)])
def test_parse_image_name_reads_every_benchmarks_rule(name, label, camid, frame):
    parsed = parse_image_name(name)
    assert (parsed.label, parsed.camid, parsed.frame) == (label, camid, frame)


@pytest.mark.parametrize("name", ["person.jpg", "0001_c1_1.jpg", "0002_c002_0030600_0.jpg", "0000_000_00_0303morning_0015_0.jpg",
                                  "0000_000_01_0303evening_0015_0.jpg", "0001_c0_1.png", "001_c1_1.png"])
def test_names_that_break_every_rule_are_refused(name):
    with pytest.raises(NameRuleError, match="follows none of the benchmarks' naming rules"):
        parse_image_name(name)


def test_cli_main_turns_user_errors_into_one_line(capsys):
    @utils.cli_main
    def main(argv=None):
        raise UserError("the thing is wrong", "do this instead")

    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: the thing is wrong — do this instead\n"


def test_cli_main_keeps_real_bugs():
    @utils.cli_main
    def main(argv=None):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        main([])


def test_gpu_ids_parsing():
    assert utils.parse_gpu_ids("-1") == []
    assert utils.parse_gpu_ids("0") == [0]
    assert utils.parse_gpu_ids("0, 2") == [0, 2]
    with pytest.raises(UserError, match="--gpu_ids"):
        utils.parse_gpu_ids("gpu0")


def test_select_device_cpu_and_fallback(capsys, monkeypatch):
    assert utils.select_device("-1") == (torch.device("cpu"), [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert utils.select_device("0") == (torch.device("cpu"), [])
    assert "not available" in capsys.readouterr().err


def test_select_device_refuses_missing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="has 1 GPU"):
        utils.select_device("3")


def test_set_seed_repeats_every_generator():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    utils.set_seed(7)
    first = draw()
    utils.set_seed(7)
    assert draw() == first
    utils.set_seed(8)
    assert draw() != first
