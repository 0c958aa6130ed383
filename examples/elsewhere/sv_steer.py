"""steering-vectors: a sublens vector as a `SteeringVector` (its layer 9 is decoder block 9's
output, steering-vectors' "decoder_block" layer 9). Run from this folder: python sv_steer.py"""

from common import MODEL_DIR, greedy, prompt_ids
from safetensors.torch import load_file
from steering_vectors import SteeringVector
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(MODEL_DIR)
model = AutoModelForCausalLM.from_pretrained(MODEL_DIR)
ids = prompt_ids(tok)
v = load_file("fr-v/vector.safetensors")["layer.9"]
sv = SteeringVector(layer_activations={9: v}, layer_type="decoder_block")
print("base", repr(greedy(model, tok, ids)))
with sv.apply(model, multiplier=2.0):  # alpha 2
    print("steered", repr(greedy(model, tok, ids)))
