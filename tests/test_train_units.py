"""Fast checks of the train step's pure parts: the launch command, batch arithmetic, the
learning-rate warning, early stopping, checkpoint completeness and the train spec rules."""

from __future__ import annotations

import json

import pytest

from scripts.compiler.spec import SpecError, check_slice
from scripts.train_model import accumulation_steps, load_train_slice, lr_warnings
from scripts.training.checkpoints import newest_complete, step_of, trim_log
from scripts.training.launch import launch_command
from scripts.training.train_log import first_non_finite_gradient, should_stop

ARGS = ["--spec-json", "{}", "--out", "m"]


def test_one_process_runs_the_script_directly():
    assert launch_command(ARGS, nproc=1, nodes=1, python="py") == ["py", "-m", "scripts.train_model", *ARGS]


def test_several_processes_on_one_node_use_torchrun_standalone():
    cmd = launch_command(ARGS, nproc=2, nodes=1, python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in cmd and "--standalone" in cmd
    assert cmd[-len(ARGS) - 3 :] == ["-m", "scripts.train_model", "--", *ARGS]


def test_several_nodes_start_one_torchrun_per_node_through_srun():
    cmd = launch_command(
        ARGS, nproc=4, nodes=2, python="py", mpi="srun --mpi=none", master_addr="n01", job_id="1234"
    )
    launcher = cmd[: cmd.index("py")]
    assert launcher == ["srun", "--mpi=none", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = cmd[cmd.index("py") :]
    for flag in ("--nproc-per-node=4", "--nnodes=2", "--rdzv-backend=c10d", "--rdzv-id=1234"):
        assert flag in torchrun
    assert "--rdzv-endpoint=n01:29634" in torchrun and "--standalone" not in torchrun
    assert torchrun[-len(ARGS) - 1 :] == ["--", *ARGS]


def test_bad_process_counts_and_missing_rendezvous_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        launch_command(ARGS, nproc=0, nodes=1)
    with pytest.raises(ValueError, match="SLURM"):
        launch_command(ARGS, nproc=1, nodes=2)


def test_the_training_cli_takes_its_process_counts():
    from scripts.train_model import parse_args as train_args

    argv = [*ARGS, "--base", "b", "--tokens", "t", "--work-dir", "w", "--log", "l", "--manifest", "m"]
    assert (train_args(argv).nproc, train_args(argv).nodes) == (1, 1)
    assert train_args(["--nproc", "2", "--nodes", "3", *argv]).nproc == 2


def train_slice(**overrides):
    return check_slice("train", {"max_steps": 10, **overrides})


def test_global_batch_is_kept_whatever_the_world_size():
    train = train_slice(per_device_batch_size=4, global_batch_size=32)
    assert [accumulation_steps(train, n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="not a multiple of per_device_batch_size x processes = 4 x 3"):
        accumulation_steps(train, 3)
    assert accumulation_steps(train_slice(gradient_accumulation_steps=3), 2) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"method": "lora", "qlora": {"quant_type": "fp4"}},
            "train.qlora: 4-bit settings apply to method qlora only",
        ),
        ({"global_batch_size": 32, "gradient_accumulation_steps": 2}, "accumulation is derived from it"),
        ({"global_batch_size": 30, "per_device_batch_size": 8}, "30 is not a multiple"),
        ({"early_stopping_patience": 2}, "needs validation; set train.eval_steps"),
    ],
)
def test_train_options_that_do_not_fit_together_are_spec_errors(overrides, message):
    with pytest.raises(SpecError, match=message):
        train_slice(**overrides)


def test_qlora_settings_get_their_defaults_only_with_method_qlora():
    qlora = load_train_slice(json.dumps({"max_steps": 5, "method": "qlora"}))["qlora"]
    assert qlora == {"quant_type": "nf4", "double_quant": True, "compute_dtype": "auto"}
    assert "qlora" not in load_train_slice(json.dumps({"max_steps": 5}))


def test_lora_learning_rate_outside_the_usual_range_warns():
    assert lr_warnings(train_slice(learning_rate=3e-3)) == [
        "train.learning_rate 0.003 is outside 1e-05..0.001, the usual range for LoRA"
    ]
    assert lr_warnings(train_slice(learning_rate=1e-6, method="qlora"))
    assert not lr_warnings(train_slice(learning_rate=2e-4))
    assert not lr_warnings(train_slice(learning_rate=3e-3, method="full"))


def test_early_stopping_waits_for_patience_validations_without_improvement():
    assert not should_stop([3.0, 2.0, 2.1], patience=2, threshold=0.0)
    assert should_stop([3.0, 2.0, 2.1, 2.05], patience=2, threshold=0.0)
    assert not should_stop([3.0, 2.0, 2.1, 1.9], patience=2, threshold=0.0)
    assert should_stop([3.0, 2.0, 1.99, 1.98], patience=2, threshold=0.05)


def write_checkpoint(
    folder, files=("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth")
):
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"x")
    (folder / "trainer_state.json").write_text("{}")


def test_newest_complete_checkpoint_skips_half_written_ones(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-10")
    write_checkpoint(tmp_path / "checkpoint-20")
    write_checkpoint(tmp_path / "checkpoint-30", files=("adapter_model.safetensors", "optimizer.pt"))
    (tmp_path / "checkpoint-40").mkdir()
    resume, incomplete = newest_complete(tmp_path)
    assert step_of(resume) == 20
    assert [p.name for p in incomplete] == ["checkpoint-40", "checkpoint-30"]
    assert newest_complete(tmp_path / "missing") == (None, [])
    log = [{"step": 10}, {"step": 20}, {"step": 20, "train_loss": 1.0}, {"step": 30}]
    assert trim_log(log, 20) == [{"step": 10}, {"step": 20}]


def test_train_script_accepts_the_separator_torchrun_may_pass_on():
    from scripts.train_model import parse_args as train_args

    argv = ["--spec-json", "{}", "--base", "b", "--tokens", "t", "--work-dir", "w", "--out", "o"]
    argv += ["--log", "l", "--manifest", "m"]
    assert vars(train_args(["--", *argv])) == vars(train_args(argv))


def test_the_gradient_check_names_the_first_non_finite_gradient_only():
    """The per-step check takes one fused norm; a NaN or inf is named, while finite gradients
    whose squared norm overflows float32 (elements of 1e30) are not a divergence."""
    import torch

    def params(*grads):
        named = []
        for i, grad in enumerate(grads):
            p = torch.nn.Parameter(torch.zeros(3))
            p.grad = None if grad is None else torch.tensor(grad)
            named.append((f"p{i}", p))
        return named

    assert first_non_finite_gradient(params([0.1, 0.2, 0.3], None)) is None
    assert first_non_finite_gradient(params([1e30, 1e30, 1.0])) is None
    assert first_non_finite_gradient(params([0.1, 0.2, 0.3], [1.0, float("nan"), 0.0])) == "p1"
    assert first_non_finite_gradient(params([float("-inf"), 0.0, 0.0], [1.0, 2.0, 3.0])) == "p0"
