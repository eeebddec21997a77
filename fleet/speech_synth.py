"""Offline English speech from espeak-ng (the `espeakng-loader` wheel ships the library and its
data), for the demo and tests on machines without the speechocean762 sample. No hub, no network."""

from __future__ import annotations

import ctypes
import threading

import numpy as np

_lock = threading.Lock()
_state: dict[str, object] = {}

AUDIO_OUTPUT_RETRIEVAL = 1
POS_CHARACTER = 1
ESPEAK_CHARS_AUTO = 0
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _library():
    if "lib" not in _state:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_RETRIEVAL, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        callback = _CALLBACK(collect)
        lib.espeak_SetSynthCallback(callback)
        _state.update(lib=lib, rate=rate, chunks=chunks, callback=callback)
    return _state


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 150) -> tuple[np.ndarray, int]:
    """Speech for `text` as float32 mono samples and their sample rate (22,050 Hz)."""
    with _lock:
        st = _library()
        lib, chunks = st["lib"], st["chunks"]
        lib.espeak_SetVoiceByName(voice.encode())
        lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE
        chunks.clear()
        data = text.encode() + b"\0"
        lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_AUTO, None, None)
        lib.espeak_Synchronize()
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return (samples.astype(np.float32) / 32768.0), int(st["rate"])
