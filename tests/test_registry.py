"""The registry: names, options read from signatures, requirements, and the rule that places a
flat option on the chosen part that has it."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from genvae import registry
from genvae.cli import main
from genvae.config import RunConfig, build_model, place, read_config
from genvae.priors import MixtureOfGaussians, StandardNormal


@pytest.fixture
def scratch_kind():
    """A kind of its own, removed afterwards, so that test entries never reach other tests."""
    registry.add_kind("testpart")
    yield "testpart"
    registry._REGISTRY.pop("testpart", None)
    registry.KINDS.remove("testpart")


def test_a_name_taken_by_another_definition_is_refused(scratch_kind):
    @registry.register(scratch_kind, "one")
    class First:
        pass

    class Second:
        pass

    with pytest.raises(ValueError, match=r"expected a new name for .*Second, got testpart 'one'.*First"):
        registry.register(scratch_kind, "one")(Second)
    assert registry.entry(scratch_kind, "one").obj is First


def test_the_same_definition_registered_again_replaces_itself(scratch_kind):
    class Part:
        pass

    registry.register(scratch_kind, "part")(Part)
    registry.register(scratch_kind, "part")(Part)  # a reloaded module
    assert registry.names(scratch_kind) == ("part",)


@pytest.mark.parametrize("kind", ["optimiser", "", None, "Prior"])
def test_an_unknown_kind_is_refused(kind):
    with pytest.raises(ValueError, match="expected kind to be one of encoder, decoder"):
        registry.register(kind, "x")


@pytest.mark.parametrize("name", ["Mog", "mog prior", "-mog", "mog_", "", 3])
def test_a_malformed_name_is_refused(name):
    with pytest.raises(ValueError, match="expected name to be a lowercase name"):
        registry.register("prior", name)


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"expected prior to be one of standard, learned, mog, vamp.*got 'gmm'"):
        registry.entry("prior", "gmm")


def test_options_are_the_parameters_that_are_not_facts_with_type_default_and_help():
    mog = registry.entry("prior", "mog")
    assert mog.obj is MixtureOfGaussians and mog.facts == ("latent_dim",)
    (option,) = mog.options
    assert (option.name, option.annotation, option.default) == ("num_components", int, 10)
    gaussian = registry.entry("likelihood", "gaussian")
    learn = gaussian.option("learn_sigma")
    assert learn.choices == ("none", "global", "pixel") and "pixel" in learn.help
    assert gaussian.facts == ("data_shape", "event_dims")
    assert not registry.entry("encoder", "mlp").option("activation").textual  # a class: from Python only


def test_each_entry_of_genvae_builds_from_facts_and_defaults():
    facts = {"data_shape": (1, 8, 8), "event_dims": 3, "latent_dim": 4, "num_classes": 3}
    for kind in ("likelihood", "objective"):
        for entry in registry.entries(kind):
            assert registry.build(entry, facts, {}) is not None, entry.name
    prior = registry.build(
        registry.entry("prior", "vamp"), {**facts, "encoder": nn.Identity()}, {"num_pseudo_inputs": 3}
    )
    assert prior.num_pseudo_inputs == 3 and prior.data_shape == (1, 8, 8)


def test_an_option_a_part_lacks_names_the_part_and_lists_its_options():
    with pytest.raises(KeyError, match=r"prior 'mog' has no option 'k'; its options: num_components"):
        registry.build(registry.entry("prior", "mog"), {"latent_dim": 2}, {"k": 3})


def test_a_value_the_part_refuses_names_the_part():
    with pytest.raises(ValueError, match=r"prior 'mog': expected num_components to be a positive int, got 0"):
        registry.build(registry.entry("prior", "mog"), {"latent_dim": 2}, {"num_components": 0})


def test_a_missing_fact_is_named():
    with pytest.raises(ValueError, match=r"prior 'vamp' needs the run fact 'encoder'"):
        registry.build(registry.entry("prior", "vamp"), {"data_shape": (1, 2, 2)}, {})


def test_requirements_are_checked_against_the_run_and_what_the_parts_provide():
    dreg, iaf = registry.entry("objective", "dreg"), registry.entry("flow", "iaf")
    registry.check([dreg], {"layers": 1})
    registry.check([dreg], {})  # what the run does not know yet is checked later
    with pytest.raises(ValueError, match=r"objective 'dreg' needs layers 1, got 2"):
        registry.check([dreg], {"layers": 2})
    with pytest.raises(ValueError, match=r"objective 'dreg' needs factorised True, got False"):
        registry.check([dreg, iaf], {"layers": 1})


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=5))
def test_a_tuple_option_reads_back_what_it_writes(sizes):
    option = registry.entry("encoder", "mlp").option("hidden")
    assert option.parse(",".join(map(str, sizes))) == (tuple(sizes) if len(sizes) > 1 else sizes[0])


@given(st.sampled_from(["true", "yes", "1", "on", "false", "no", "0", "off"]))
def test_a_boolean_option_reads_its_words(word):
    option = registry.Option("x", bool, False, "")
    assert option.parse(word) is (word in ("true", "yes", "1", "on"))


def test_a_literal_option_refuses_other_words():
    option = registry.Option("x", Literal["a", "b"], "a", "")
    with pytest.raises(ValueError, match=r"expected one of 'a', 'b', got 'c'"):
        option.parse("c")


def test_a_bare_option_goes_to_the_one_chosen_part_that_has_it():
    parts = RunConfig(prior="mog", likelihood="logistic-mixture").parts()
    assert place("k", parts) == [("objective", "k")]
    assert place("hidden", parts) == [("encoder", "hidden"), ("decoder", "hidden")]
    assert place("prior.num_components", parts) == [("prior", "num_components")]
    assert place("components", parts) == [("prior", "num_components")]  # an earlier version's name
    with pytest.raises(ValueError, match=r"--likelihood-num-components or --prior-num-components"):
        place("num_components", parts)
    with pytest.raises(ValueError, match=r"no part of this run has an option 'sigma'"):
        place("sigma", parts)


def test_the_decoder_mirrors_the_encoder():
    cfg = RunConfig.from_settings({"hidden": [512, 256], "latent_dim": 3})
    assert cfg.options["encoder"]["hidden"] == (512, 256) and cfg.options["decoder"]["hidden"] == (256, 512)
    model = build_model(cfg, (1, 8, 8), None)
    widths = [m.out_features for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    assert widths == [256, 512, 64]


def test_a_cvae_takes_its_defaults_where_the_settings_leave_them():
    cfg = RunConfig.from_settings({"model": "cvae"})
    assert (cfg.prior, cfg.option("objective", "beta"), cfg.option("encoder", "hidden")) == (
        "conditional",
        2.0,
        (400, 400),
    )
    assert RunConfig.from_settings({"model": "cvae", "objective": "dreg"}).options.get("objective", {}) == {}
    assert RunConfig.from_settings({"model": "cvae", "beta": 1.0}).option("objective", "beta") == 1.0


def test_free_bits_of_an_earlier_version_chooses_the_free_bits_objective():
    cfg = RunConfig.from_settings({"free_bits": 0.25})
    assert cfg.objective == "free-bits" and cfg.options["objective"] == {"lambda_": 0.25}


def test_a_config_json_of_an_earlier_version_reads_back_without_its_unused_options(tmp_path):
    old = {  # every field of version 0.2's RunConfig, as its runs wrote config.json
        "dataset": "mnist", "model": "vae", "arch": "mlp", "layers": None, "inference": "top-down",
        "posterior_flow": "none", "flow_length": 2, "hidden": [400], "channels": [32, 64], "latent_dim": 20,
        "likelihood": "bernoulli", "sigma": 1.0, "learn_sigma": "none", "logistic_components": 10,
        "prior": "mog", "components": 7, "pseudo_inputs": 500, "binarize": "none", "epochs": 3,
        "batch_size": 128, "lr": 0.001, "objective": "iwae", "k": 4, "free_bits": None, "beta": 1.0,
        "beta_schedule": "constant", "warmup_epochs": 0, "kl_warmup_epochs": 0, "grad_clip": None, "seed": 1,
        "device": "auto", "compile": False, "amp": False, "cuda_graph": False, "train_subset": None,
        "test_subset": None, "out": "runs/x",
    }  # fmt: skip
    cfg = RunConfig.from_settings(old, strict=False)
    assert cfg.options == {"encoder": {"hidden": (400,)}, "decoder": {"hidden": (400,)},
                           "prior": {"num_components": 7}, "objective": {"k": 4, "beta": 1.0}}  # fmt: skip
    with pytest.raises(ValueError, match="no part of this run has an option 'inference'"):
        RunConfig.from_settings(old)


def test_the_config_json_a_run_writes_is_accepted_back(tmp_path):
    cfg = RunConfig.from_settings({"prior": "mog", "components": 3, "objective": "iwae", "k": 2, "epochs": 2})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert RunConfig.from_settings(read_config(path)) == cfg


def test_a_toml_table_sets_a_kinds_options(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('prior = "mog"\nlatent-dim = 4\n[options.prior]\nnum_components = 3\n[options.objective]\nk = 2\n')
    cfg = RunConfig.from_settings(read_config(path))
    assert cfg.options == {"prior": {"num_components": 3}, "objective": {"k": 2}} and cfg.latent_dim == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prior", "mog", "--num-components", "x"], "prior 'mog' option 'num_components': expected an int, got 'x'"),
        (["--prior-num-components", "2.5", "--prior", "mog"], "expected an int, got '2.5'"),
        (["--objective", "dreg", "--beta", "2"], "no part of this run has an option 'beta'"),
        (["--prior-num-pseudo-inputs", "3"], "prior 'standard' has no option 'num_pseudo_inputs'"),
        (["--learn-sigma", "pixel"], "no part of this run has an option 'learn_sigma'"),
        (["--likelihood", "gaussian", "--learn-sigma", "each"], "expected one of 'none', 'global', 'pixel'"),
        (["--objective", "dreg", "--posterior-flow", "iaf"], "objective 'dreg' needs factorised True, got False"),
        (["--prior", "vamp", "--model", "cvae"], "prior 'vamp' needs conditional False, got True"),
    ],
)
def test_a_bad_part_option_is_one_line_naming_the_part_and_the_option(argv, message, capsys, tmp_path):
    assert main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_python_use_needs_no_registration():
    class Mine(nn.Module):
        def __init__(self, latent_dim: int) -> None:
            super().__init__()
            self.inner = StandardNormal(latent_dim)

        def forward(self, y=None):
            return self.inner(y)

    assert registry.entry_of(Mine) is None and registry.entry_of(StandardNormal).name == "standard"


@pytest.mark.parametrize("argv", [["train", "--plug", "x"], ["train", "--num-comp", "3"], ["eval", "r", "--iw", "5"]])
def test_flags_are_never_abbreviated(argv, capsys):
    """A plugin's flags would change what an abbreviation means, and --plugin is read by its name."""
    with pytest.raises(SystemExit):
        main(argv)
    assert "unrecognized arguments" in capsys.readouterr().err
