"""The `gop` engine: goodness-of-pronunciation features from pocketsphinx's en-US acoustic model
plus a small trained head, so a CPU scores for real (no GPU, no download at run time).

Modules, one job each: `model_files` reads the acoustic model's binary files, `mfcc` computes its
1s_c_d_dd features, `senones` the per-frame senone log-likelihoods, `align` a forced alignment
that cannot fail, `phone_scores` the frame-level GOP per phone, `prosody` timing/pitch/energy,
`features` joins them into one `UtteranceFeatures`, `head` turns those into scores.
"""
