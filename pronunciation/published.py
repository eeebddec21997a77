"""Published figures to report beside ours: Table 1 of "Fine-tuning large multimodal models for
automatic pronunciation assessment" (../shared/reference/paper-finetuning-lmm-for-apa.md), on
speechocean762's test split. (PCC, SCC); None where the paper gives none.
"""

from __future__ import annotations

Pair = tuple[float | None, float | None]

PUBLISHED: dict[str, dict[str, Pair]] = {
    "FT Qwen2-Audio-7B (paper)": {
        "phone accuracy": (0.38, 0.34), "word accuracy": (0.51, 0.46), "word stress": (0.11, 0.11),
        "word total": (0.52, 0.46), "sentence accuracy": (0.69, 0.63), "fluency": (0.74, 0.70),
        "prosody": (0.73, 0.67), "completeness": (None, None), "sentence total": (0.72, 0.67),
    },
    "GOPT": {
        "phone accuracy": (0.61, None), "word accuracy": (0.53, None), "word stress": (0.29, None),
        "word total": (0.55, None), "sentence accuracy": (0.71, None), "fluency": (0.75, None),
        "prosody": (0.76, None), "completeness": (0.16, None), "sentence total": (0.74, None),
    },
    "Azure PA": {
        "word accuracy": (0.62, 0.47), "sentence accuracy": (0.70, 0.68), "fluency": (0.72, 0.62),
        "prosody": (0.84, 0.78), "completeness": (0.26, 0.14), "sentence total": (0.78, 0.75),
    },
}
