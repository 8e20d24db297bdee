#!/usr/bin/env bash
# The robust-overfitting pilot (issue 24; docs/detection.md, "Robust overfitting: the pilot"):
# PGD-5 AT of model=wide_cnn on a few Fashion-MNIST images with a piecewise lr decay, one torch
# thread a trial, looking for Rice et al.'s fall of val PGD after the decay.
#   bash benchmarks/detection/ro_pilot.sh OUT a|b|...|j|n|p|q|r  # one pilot trial into OUT (resumable)
#   bash benchmarks/detection/ro_pilot.sh OUT curves           # every pilot's epoch curves, as CSV
set -euo pipefail
out=${1:?usage: $0 OUT a|b|c|d|e|f|g|h|i|j|n|p|q|r|curves}
ea="${EA:-.venv/bin/energy-at}"
common=(method=pgd model=wide_cnn attack.steps=5 schedule=piecewise batch_size=64 data.probe_size=256
        data.test_size=500 precision=bf16 channels_last=true threads=1 device=cpu stop_on=[] seed=0 "out=$out")
case "${2:?}" in  # lr 0.05 x0.1 at each milestone; weight decay 5e-4 unless said
  a) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=1000 epochs=80 data.val_size=500 ;;  # decay at 50%, 75%
  b) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=2000 epochs=60 data.val_size=500 ;;
  c) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=1000 epochs=100 "schedule.milestones=[0.3,0.9]" data.val_size=1000 ;;
  d) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=500 epochs=150 "schedule.milestones=[0.2,0.9]" data.val_size=1000 ;;
  e) "$ea" train "${common[@]}" attack.eps=0.2 data.subset=1000 epochs=100 "schedule.milestones=[0.3,0.9]" data.val_size=1000 optim.weight_decay=0 ;;
  f) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=1000 epochs=100 "schedule.milestones=[0.3,0.9]" data.val_size=1000 optim.weight_decay=0 ;;
  # longer after the first decay (issue 24's next step): 240 epochs past it, no weight decay
  g) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=1000 epochs=300 "schedule.milestones=[0.1,0.9]" data.val_size=1000 optim.weight_decay=0 ;;
  h) "$ea" train "${common[@]}" attack.eps=0.15 data.subset=1000 epochs=300 "schedule.milestones=[0.1,0.9]" schedule.factor=0.3 data.val_size=1000 optim.weight_decay=0 ;;
  # 100 epochs that fit the segment's budget: 500 images, one x0.3 decay at 40%, PGD-5 evaluation on 1,000 val
  # images (the segment's); k and l are the first segment grid's trials (corpus.py's history: 1,000 images, eps 0.15)
  i|j) "$ea" train "${common[@]}" "attack.eps=$([ "$2" = i ] && echo 0.15 || echo 0.1)" data.subset=500 epochs=100 \
         "schedule.milestones=[0.4]" schedule.factor=0.3 data.val_size=1000 eval.pgd_steps=5 optim.weight_decay=0 "trial_id=$2" ;;
  # j's setting with 4x the steps an epoch (batch 16) at the same lr, so that the fall after the decay might take
  # fewer epochs (j: 8 steps an epoch, the fall spread over 60); 40 epochs, the decay at 25%
  n) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=500 epochs=40 "schedule.milestones=[0.25]" schedule.factor=0.3 \
       data.val_size=1000 eval.pgd_steps=5 optim.weight_decay=0 batch_size=16 trial_id=n ;;
  # about half j's images (256, the probe's size: easier to memorise), batch 32 (8 steps an epoch, as j), 60 epochs, the decay at 20%
  p) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=256 epochs=60 "schedule.milestones=[0.2]" schedule.factor=0.3 \
       data.val_size=1000 eval.pgd_steps=5 optim.weight_decay=0 batch_size=32 trial_id=p ;;
  # j's setting with label noise on the training set (Dong et al., NeurIPS 2022: robust overfitting as label
  # noise memorised after the decay), hoping for a sharper fall: 20% (q) and 40% (r); 60 epochs, the decay at 25%
  q|r) "$ea" train "${common[@]}" attack.eps=0.1 data.subset=500 epochs=60 "schedule.milestones=[0.25]" schedule.factor=0.3 \
         data.val_size=1000 eval.pgd_steps=5 optim.weight_decay=0 "data.label_noise=$([ "$2" = q ] && echo 0.2 || echo 0.4)" \
         "trial_id=$2" ;;
  curves) "${PY:-.venv/bin/python}" - "$out" <<'PY'
import sys, polars as pl
from analysis.read import SweepLogs
e = SweepLogs(sys.argv[1], warn=False).scan("epochs").filter(pl.col("train_loss").is_not_null()).collect()  # epoch ends
wide = (e.pivot(on="split", index=["trial", "epoch"], values=["acc_pgd", "acc_nat"])
        .join(e.filter(pl.col("split") == "val").select("trial", "epoch", "lr", "train_loss"), on=["trial", "epoch"])
        .sort("trial", "epoch"))
print(wide.select("trial", "epoch", "lr", "train_loss", val_pgd="acc_pgd_val", val_clean="acc_nat_val",
                  probe_pgd="acc_pgd_probe").write_csv(float_precision=4), end="")
PY
  ;;
  *) echo "unknown pilot ${2}" >&2; exit 2 ;;
esac
