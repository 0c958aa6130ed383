#!/bin/bash
# The peer libraries pin transformers < 5 (sublens uses 5.x): give them their own environments.
# The model directory sublens writes loads under both (sublens models --path smollm2-135m).
set -e
python3 -m venv peers
peers/bin/pip install -q "torch==2.13.0" "transformers==4.57.6" "steering-vectors==0.12.2" \
  "repeng==0.4.0" accelerate gguf
python3 -m venv lmeval
lmeval/bin/pip install -q "torch==2.13.0" "transformers==4.57.6" "lm_eval==0.4.13" accelerate
