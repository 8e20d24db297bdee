"""The telemetry writer on its own: batched energies equal per-batch formulas, padding and missing f(x)."""
import numpy as np
import polars as pl
import pytest
import torch

from workloads.energy import joint_energy, marginal_energy
from workloads.telemetry import EnergyLog, block_stats
from workloads.telemetry.writer import ADV_COLUMNS, NAT_COLUMNS


def per_batch(adv: torch.Tensor, nat: torch.Tensor, y: torch.Tensor) -> list[float]:
    """ADV_COLUMNS + NAT_COLUMNS of one batch, straight from the definitions (docs/methods.md#telemetry)."""
    de, de_y = marginal_energy(nat) - marginal_energy(adv), joint_energy(nat, y) - joint_energy(adv, y)
    return [(adv.argmax(1) == y).float().mean(), marginal_energy(adv).mean(), joint_energy(adv, y).mean(),
            (nat.argmax(1) == y).float().mean(), marginal_energy(nat).mean(), joint_energy(nat, y).mean(),
            de.mean(), de_y.mean(), de.std(correction=0)]


def test_block_stats_equal_per_batch_formulas_and_ignore_padding() -> None:
    g = torch.Generator().manual_seed(0)
    steps, B, C = 4, 16, 10
    logits = torch.randn(steps, 2, B, C, generator=g) * 3
    y = torch.randint(0, C, (steps, B), generator=g)
    sizes = [16, 16, 5, 1]
    for i, n in enumerate(sizes):
        y[i, n:] = -1  # padding of the short batches: its logits may hold anything
    logits[2, :, 5:] = float("nan")
    logits[3, :, 1:] = float("inf")
    got = block_stats(logits, y)
    assert got.shape == (steps, len(ADV_COLUMNS + NAT_COLUMNS))
    for i, n in enumerate(sizes):
        want = torch.stack(per_batch(logits[i, 0, :n], logits[i, 1, :n], y[i, :n]))
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flush_every", [3, 7, 100])
def test_energy_log_rows_null_without_f_x_and_nan_kept(tmp_path, flush_every: int) -> None:
    """Rows that did not measure f(x) write null natural columns; a NaN that was measured stays NaN;
    short batches and block and flush boundaries do not change the values."""
    g = torch.Generator().manual_seed(1)
    log = EnergyLog(tmp_path, "t", "pgd", flush_every)
    want = []
    for step in range(60):
        n = 3 if step % 20 == 19 else 8  # a short last batch each "epoch"
        adv, nat = torch.randn(n, 10, generator=g), torch.randn(n, 10, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        if step == 44:
            nat[0, 0] = float("nan")
        measured = step % 4 == 0
        log.log_step(step // 20, step, 0.1, {"loss": torch.tensor(float(step))}, y, adv, nat if measured else None)
        want.append([float(v) for v in per_batch(adv, nat, y)])
    log.flush()
    rows = pl.read_parquet(tmp_path / "batches" / "t" / "*.parquet").sort("step")
    assert rows["step"].to_list() == list(range(60)) and rows["loss"].to_list() == [float(s) for s in range(60)]
    assert rows["reg"].null_count() == 60  # a term the method does not have is null
    want = np.array(want)
    for j, col in enumerate(ADV_COLUMNS + NAT_COLUMNS):
        got = rows[col].to_numpy()
        every = slice(None) if col in ADV_COLUMNS else slice(None, None, 4)
        np.testing.assert_allclose(got[every], want[every, j], rtol=1e-5, atol=1e-5, err_msg=col)
        if col in NAT_COLUMNS:
            measured = rows["step"] % 4 == 0
            assert rows.filter(~measured)[col].null_count() == 45, col  # null, not NaN
    assert np.isnan(rows.filter(pl.col("step") == 44)["e_nat"].item())
    assert log.epoch_loss(1) == np.mean(range(20, 40))  # the flushed losses of epoch 1


def test_abnormal_share_is_the_share_whose_cross_entropy_fell(tmp_path) -> None:
    """aae_frac of a row = mean_i 1[CE(f(x*_i), y_i) < CE(f(x0_i), y_i)] over the real samples."""
    g = torch.Generator().manual_seed(3)
    log = EnergyLog(tmp_path, "t", "rs_fgsm", flush_every=7)
    expected = []
    for step in range(7):
        b = 16 if step < 6 else 5  # a short last batch: padding must not count
        adv, start = torch.randn(b, 10, generator=g), torch.randn(b, 10, generator=g)
        y = torch.randint(0, 10, (b,), generator=g)
        ce = lambda lg: torch.nn.functional.cross_entropy(lg, y, reduction="none")  # noqa: E731
        expected.append((ce(adv) < ce(start)).float().mean().item())
        log.log_step(0, step, 0.1, {"loss": torch.tensor(1.0)}, y, adv, None, start if step != 3 else None)
    got = pl.read_parquet(tmp_path / "batches" / "t").sort("step")["aae_frac"].to_list()
    assert got[3] is None  # a step without a start point has no share
    assert np.allclose([v for i, v in enumerate(got) if i != 3], [v for i, v in enumerate(expected) if i != 3],
                       atol=1e-6)
