"""The profile a chapter picks, and what it tells the reader, on every kind of machine.

The environments are faked: no test needs a GPU, Colab, or ``google.colab``.
"""

import sys
import types

import pytest
import torch

from sslbook import colab
from sslbook.colab import Environment, choose_profile

LAPTOP = Environment(colab=False, gpu=None, device="CPU, 2 threads, no native bf16, so fp32")
COLAB_CPU = Environment(colab=True, gpu=None, device="CPU, 2 threads, no native bf16, so fp32")
COLAB_T4 = Environment(colab=True, gpu="Tesla T4", device="CUDA (Tesla T4)")
WORKSTATION = Environment(colab=False, gpu="NVIDIA H200", device="CUDA (NVIDIA H200)")


def test_no_gpu_outside_colab_is_cpu_in_one_quiet_line():
    choice = choose_profile(None, LAPTOP)
    assert choice.profile == "cpu"
    assert not choice.warning
    assert choice.message == f"profile 'cpu' on {LAPTOP.device}"


@pytest.mark.parametrize("env", [COLAB_T4, WORKSTATION], ids=["colab", "workstation"])
def test_a_gpu_and_no_profile_means_the_gpu_profile(env):
    choice = choose_profile(None, env)
    assert choice.profile == "gpu"
    assert not choice.warning
    assert env.gpu in choice.message
    assert "profile = 'cpu'" in choice.message  # how to pick another


def test_colab_without_a_gpu_says_how_to_get_one_and_what_cpu_costs():
    choice = choose_profile(None, COLAB_CPU)
    assert choice.profile == "cpu"
    assert choice.warning
    assert "Runtime → Change runtime type → T4 GPU" in choice.message
    assert "a few minutes per chapter on 2 CPU cores" in choice.message
    assert "Colab's free CPU runtime is of that order" in choice.message


@pytest.mark.parametrize("env", [LAPTOP, COLAB_CPU, COLAB_T4, WORKSTATION])
@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_an_explicit_small_profile_always_wins_quietly(name, env):
    choice = choose_profile(name, env)
    assert choice.profile == name
    assert not choice.warning
    assert env.device in choice.message


@pytest.mark.parametrize("env", [COLAB_T4, WORKSTATION])
def test_explicit_gpu_on_a_gpu_is_quiet(env):
    choice = choose_profile("gpu", env)
    assert (choice.profile, choice.warning) == ("gpu", False)


def test_explicit_gpu_without_a_gpu_is_kept_with_a_warning():
    choice = choose_profile("gpu", LAPTOP)
    assert (choice.profile, choice.warning) == ("gpu", True)
    assert "no GPU" in choice.message and "profile = 'cpu'" in choice.message
    assert "Runtime" not in choice.message  # the Colab steps only on Colab


def test_explicit_gpu_on_colab_without_a_gpu_says_how_to_get_one():
    choice = choose_profile("gpu", COLAB_CPU)
    assert (choice.profile, choice.warning) == ("gpu", True)
    assert "Runtime → Change runtime type → T4 GPU" in choice.message


def test_the_environment_variable_counts_as_explicit():
    env = Environment(colab=True, gpu="Tesla T4", profile_env="smoke", device="CUDA (Tesla T4)")
    choice = choose_profile(None, env)
    assert (choice.profile, choice.warning) == ("smoke", False)
    assert "$SSLBOOK_PROFILE" in choice.message
    no_gpu = Environment(profile_env="gpu")
    assert choose_profile(None, no_gpu).warning
    assert "$SSLBOOK_PROFILE" in choose_profile(None, no_gpu).message


def test_the_notebooks_profile_wins_over_the_environment_variable():
    env = Environment(gpu="Tesla T4", profile_env="smoke")
    assert choose_profile("cpu", env).profile == "cpu"


@pytest.mark.parametrize("requested, env_value", [("GPU", None), (None, "fast")])
def test_an_unknown_profile_names_the_valid_ones(requested, env_value):
    with pytest.raises(ValueError, match="choose one of: smoke, cpu, gpu"):
        choose_profile(requested, Environment(profile_env=env_value))


def test_detect_reads_the_real_process(monkeypatch):
    monkeypatch.delenv("SSLBOOK_PROFILE", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    env = colab.detect()
    assert env.colab is False
    assert env.profile_env is None
    assert (env.gpu is None) == (not torch.cuda.is_available())

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("SSLBOOK_PROFILE", "smoke")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert colab.detect() == Environment(True, "Tesla T4", "smoke", "CUDA (Tesla T4)")


def test_an_empty_environment_variable_is_unset(monkeypatch):
    monkeypatch.setenv("SSLBOOK_PROFILE", "")
    assert colab.detect().profile_env is None


def test_setup_prints_and_returns_the_choice(monkeypatch, capsys):
    monkeypatch.setattr(colab, "detect", lambda: COLAB_T4)
    assert colab.setup(None) == "gpu"
    out = capsys.readouterr()
    assert "GPU found (Tesla T4)" in out.out and not out.err

    monkeypatch.setattr(colab, "detect", lambda: COLAB_CPU)
    assert colab.setup() == "cpu"
    assert "Change runtime type" in capsys.readouterr().err  # a warning: shown in red
