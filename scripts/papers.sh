#!/bin/sh
# The gallery of classic init results: each study under experiments/papers trained from scratch into
# results/papers/<name> (claims declared before its runs), then the probes its page shows; prints each wall time.
set -e
INITBENCH=${INITBENCH:-.venv/bin/initbench}
for study in ${*:-experiments/papers/*.yaml}; do
  name=$(basename "$study" .yaml)
  rm -rf "results/papers/$name"
  start=$(date +%s)
  "$INITBENCH" sweep "$study" --out "results/papers/$name" --no-progress > /dev/null
  echo "$name: $(( $(date +%s) - start )) s"
done
# Glorot & Bengio's figure 2: the top sigmoid layer driven to saturation in the first steps.
"$INITBENCH" probe --model 'mlp(depth=5, width=256, activation=sigmoid)' --dataset digits --seeds 2 --steps 300 \
  --lr 0.1 --inits 'kaiming_uniform(a=2.23606797749979, nonlinearity=leaky_relu)' xavier_uniform \
  --stats act_mean --out results/papers/glorot2010-probe > /dev/null
# Pennington et al.'s dynamical isometry: the input-output Jacobian's singular values at depth 64.
"$INITBENCH" probe --model 'mlp(depth=64, width=128, activation=tanh)' --dataset digits --seeds 2 --jacobian 8 \
  --inits xavier_normal orthogonal --stats act_std --out results/papers/pennington2017-probe > /dev/null
echo "probes: results/papers/glorot2010-probe, results/papers/pennington2017-probe"
# The plots the gallery's pages show, copied into the documentation.
copy() { cp "results/papers/$1" "docs/papers/img/$2"; }
mkdir -p docs/papers/img
copy "he2015/curves_digits_mlp_depth=22.png" he2015-depth22.png
copy "he2015/curves_digits_mlp_depth=30.png" he2015-depth30.png
copy "glorot2010-probe/steps_act_mean.png" glorot2010-saturation.png
copy "mishkin2016/forest_digits_mlp_depth=20_width=48.png" mishkin2016-forest.png
copy "zero-residual/curves_digits_resnet_norm=none.png" zero-residual-none.png
copy "zero-residual/curves_digits_resnet_norm=batch.png" zero-residual-batch.png
copy "pennington2017-probe/jacobian_spectrum.png" pennington2017-jacobian.png
copy "pennington2017/curves_digits_mlp_depth=64.png" pennington2017-depth64.png
echo "plots: docs/papers/img"
