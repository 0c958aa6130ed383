"""repeng: the GGUF export (`direction.9` = alpha·v, alpha 2 baked in) on a `ControlModel` over
block 9. Run from this folder: python repeng_steer.py"""

from common import MODEL_DIR, greedy, prompt_ids
from repeng import ControlModel, ControlVector
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(MODEL_DIR)
model = ControlModel(AutoModelForCausalLM.from_pretrained(MODEL_DIR), [9])
ids = prompt_ids(tok)
print("base", repr(greedy(model, tok, ids)))
model.set_control(ControlVector.import_gguf("fr.gguf"), 1.0)
print("steered", repr(greedy(model, tok, ids)))
