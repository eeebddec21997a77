"""The retraining queue: annotation batches -> dataset -> LoRA SFT (+ SimPO) -> evaluation -> registry.

Import rule: `config`, `annotations`, `batches`, `dataset`, `registry` and `job` import no torch at
module level, so the gateway can register batches, create jobs and promote adapters without
loading the ML stack. `sft`, `loop`, `simpo`, `evaluate` and `report` are the training side.
"""
