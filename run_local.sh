#!/usr/bin/env bash
# deepfake-scan, locally.
#   ./run_local.sh        set up .venv (first run only), make the sample archive, scan it
#   ./run_local.sh test   set up .venv (first run only), run the test suite
#   ./run_local.sh train-demo   rebuild models/weights/demo.pt from generated data and evaluate it (CPU, ~1 h)
#   ./run_local.sh bench [ARGS]  the performance benchmark (python -m bench; see README, Performance)
# Extra arguments after 'test' go to pytest; after 'train-demo', to 'deepfake-scan train'
# (e.g. --set frame.epochs=2); after nothing, to 'deepfake-scan scan'.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=${PYTHON:-python3}
SAMPLES=data/samples
OUTPUT=outputs/sample_scan
# torch is pinned to the CPU wheel the machine carries: an unpinned torch pulls GBs of CUDA.
TORCH_SPEC="torch==2.13.0"
# facenet-pytorch pins torch<2.3, numpy<2, Pillow<10.3; it works with ours, so no deps.
FACENET_SPEC="facenet-pytorch==2.6.0"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed" want
  want=$(cat setup.py run_local.sh | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "== installing deepfake-scan into $VENV (a few minutes, first run only)"
  local pip="$VENV/bin/python -m pip --disable-pip-version-check --quiet"
  $pip install "$TORCH_SPEC"
  $pip install -e ".[test]"
  $pip install --no-deps "$FACENET_SPEC"
  "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  echo "$want" >"$stamp"
}

case "${1:-}" in
  test)
    shift
    setup
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  train-demo)
    shift
    setup
    ds="$VENV/bin/deepfake-scan"
    [ -f data/trainset/manifest.csv ] || "$ds" samples data/trainset --training-set
    [ -f data/crossset/manifest.csv ] || "$ds" samples data/crossset --cross-manipulation
    "$ds" extract --data data/trainset/manifest.csv --output outputs/demo_faces --train-config configs/train_demo.yaml
    "$ds" train --config configs/train_demo.yaml "$@"
    "$VENV/bin/python" -m pipeline.export_demo outputs/train_demo/model.pt models/weights/demo.pt
    # Held-out identities: our own blends (test split), then four manipulation families never trained on.
    "$ds" evaluate --checkpoint models/weights/demo.pt --data data/trainset/manifest.csv \
      --split test --output outputs/demo_metrics.json
    "$ds" evaluate --checkpoint models/weights/demo.pt --data data/crossset/manifest.csv \
      --output outputs/demo_cross_metrics.json
    ;;
  bench)
    shift
    setup
    exec "$VENV/bin/python" -m bench "$@"
    ;;
  -h|--help)
    sed -n '2,8p' "$0"
    ;;
  *)
    setup
    if [ ! -f "$SAMPLES/manifest.csv" ]; then
      echo "== generating the sample archive in $SAMPLES"
      "$VENV/bin/deepfake-scan" samples "$SAMPLES"
    fi
    echo "== scanning $SAMPLES into $OUTPUT"
    exec "$VENV/bin/deepfake-scan" scan "$SAMPLES/manifest.csv" --output "$OUTPUT" "$@"
    ;;
esac
