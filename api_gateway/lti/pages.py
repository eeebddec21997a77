"""The LTI pages: refusal, auto-posting form, deep-linking form, and the learner's recording page.

Plain HTML with every dynamic value escaped; the recording page's script records with
MediaRecorder, shows a level meter, lets the learner listen and re-record, converts the take to
16 kHz mono WAV in the browser (decodeAudioData + OfflineAudioContext: every browser can decode
what its own MediaRecorder wrote, and the workers read WAV), uploads it, then polls the result.
"""

from __future__ import annotations

import json
from html import escape

STYLE = """<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:1.5rem auto;padding:0 1rem;color:#222}
button{font-size:1rem;padding:.5rem 1rem;margin:.25rem .25rem .25rem 0}.ref{font-size:1.4rem;margin:1rem 0}
#meter{height:.6rem;background:#eee;border-radius:.3rem;overflow:hidden}#level{height:100%;width:0;background:#2a7}
table{border-collapse:collapse;margin-top:1rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:center}
.err{color:#a00}.lo{background:#fdd}.mid{background:#ffd}.hi{background:#dfd}</style>"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>{STYLE}</head><body>{body}</body></html>")


def refusal_page(code: str, message: str) -> str:
    return _page("Launch refused", f"<h1>This activity could not be opened</h1><p class='err'>{escape(message)}</p>"
                                   f"<p>Reason code: <code id='code'>{escape(code)}</code></p>")


def autopost_page(action: str, fields: dict[str, str]) -> str:
    """A form that posts itself (the deep-linking response back to the platform)."""
    inputs = "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in fields.items())
    return _page("Returning to the course", f"<form id='f' method='post' action='{escape(action)}'>{inputs}"
                 "<noscript><button>Continue</button></noscript></form>"
                 "<script>document.getElementById('f').submit()</script>")


def deep_link_page(action: str, error: str | None = None, title: str = "", text: str = "", phones: str = "") -> str:
    err = f"<p class='err' id='error'>{escape(error)}</p>" if error else ""
    return _page("Add a read-aloud activity", f"""<h1>Add a read-aloud activity</h1>{err}
<form method="post" action="{escape(action)}">
<p><label>Title<br><input name="title" size="50" value="{escape(title or 'Read aloud')}"></label></p>
<p><label>Text the learner reads aloud<br><textarea name="reference_text" rows="3" cols="60" required>{escape(text)}</textarea></label></p>
<p><label>Phones (optional, JSON: one list of ARPAbet phones per word)<br>
<textarea name="reference_phones" rows="2" cols="60">{escape(phones)}</textarea></label></p>
<button type="submit">Add to the course</button></form>""")


RECORDER_JS = r"""
const cfg = JSON.parse(document.getElementById('cfg').textContent);
let rec = null, chunks = [], blob = null, stream = null, raf = 0;
const $ = id => document.getElementById(id);
function status(t){ $('status').textContent = t; }
async function start(){
  stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const ctx = new AudioContext(), an = ctx.createAnalyser(); ctx.createMediaStreamSource(stream).connect(an);
  const buf = new Uint8Array(an.fftSize);
  (function meter(){ an.getByteTimeDomainData(buf); let p = 0; for (const v of buf) p = Math.max(p, Math.abs(v - 128));
    $('level').style.width = Math.min(100, p / 1.28) + '%'; raf = requestAnimationFrame(meter); })();
  const type = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/wav'].find(t => MediaRecorder.isTypeSupported(t));
  rec = new MediaRecorder(stream, type ? {mimeType: type} : {}); chunks = [];
  rec.ondataavailable = e => chunks.push(e.data);
  rec.onstop = () => { blob = new Blob(chunks, {type: rec.mimeType}); $('play').src = URL.createObjectURL(blob);
    $('submit').disabled = false; cancelAnimationFrame(raf); stream.getTracks().forEach(t => t.stop()); status('Listen, then submit or record again.'); };
  rec.start(); $('stop').disabled = false; $('record').disabled = true; $('submit').disabled = true; status('Recording...');
}
function stop(){ rec.stop(); $('stop').disabled = true; $('record').disabled = false; $('record').textContent = 'Record again'; }
async function toWav(b){
  const raw = await new AudioContext().decodeAudioData(await b.arrayBuffer());
  const n = Math.ceil(raw.duration * 16000), off = new OfflineAudioContext(1, n, 16000);
  const src = off.createBufferSource(); src.buffer = raw; src.connect(off.destination); src.start();
  const pcm = (await off.startRendering()).getChannelData(0), out = new DataView(new ArrayBuffer(44 + pcm.length * 2));
  const w = (o, s) => [...s].forEach((ch, i) => out.setUint8(o + i, ch.charCodeAt(0)));
  w(0, 'RIFF'); out.setUint32(4, 36 + pcm.length * 2, true); w(8, 'WAVEfmt '); out.setUint32(16, 16, true);
  out.setUint16(20, 1, true); out.setUint16(22, 1, true); out.setUint32(24, 16000, true); out.setUint32(28, 32000, true);
  out.setUint16(32, 2, true); out.setUint16(34, 16, true); w(36, 'data'); out.setUint32(40, pcm.length * 2, true);
  pcm.forEach((v, i) => out.setInt16(44 + i * 2, Math.max(-1, Math.min(1, v)) * 0x7fff, true));
  return new Blob([out], {type: 'audio/wav'});
}
async function submit(){
  $('submit').disabled = true; status('Uploading...');
  let body = blob; try { body = await toWav(blob); } catch (e) { /* send as recorded */ }
  const r = await fetch(cfg.upload_url, {method: 'POST', headers: {'content-type': body.type.split(';')[0]}, body});
  const j = await r.json();
  if (!r.ok) { status('Refused: ' + j.detail.message + ' (' + j.detail.code + ')'); $('submit').disabled = false; return; }
  status('Scoring...'); poll(j.result_url);
}
const esc = t => String(t).replace(/[&<>"']/g, ch => '&#' + ch.charCodeAt(0) + ';');
function cls(v, max){ return v == null ? '' : (v / max < 0.5 ? 'lo' : v / max < 0.8 ? 'mid' : 'hi'); }
async function poll(url){
  const j = await (await fetch(url)).json();
  if (j.status === 'queued' || j.status === 'running') { setTimeout(() => poll(url), 1500); return; }
  if (j.status === 'failed') { status('This recording could not be scored: ' + j.error.message + ' (' + j.error.code + ')'); return; }
  const s = j.scores.sentence || {}, v = a => s[a] ? s[a].value : '-';
  let html = `<p>Total <b>${v('total')}</b>/10 &middot; accuracy ${v('accuracy')} &middot; fluency ${v('fluency')} &middot; prosody ${v('prosody')} &middot; completeness ${v('completeness')}</p>`;
  html += '<table><tr><th>word</th><th>score</th><th>phones (0-10)</th></tr>';
  for (const w of j.scores.words) {
    const ph = (w.phones || []).map(p => `<span class="${cls(p.accuracy.value, 10)}">${esc(p.phone)}</span>`).join(' ');
    html += `<tr><td>${esc(w.text)}</td><td class="${cls(w.total && w.total.value, 10)}">${w.total ? w.total.value : '-'}</td><td>${ph}</td></tr>`;
  }
  $('result').innerHTML = html + '</table>'; status('Scored. Your grade is sent to the course.');
}
$('record').onclick = start; $('stop').onclick = stop; $('submit').onclick = submit;
"""


def recording_page(*, title: str, reference_text: str, upload_url: str, user_name: str | None) -> str:
    cfg = json.dumps({"upload_url": upload_url}).replace("<", "\\u003c")
    hello = f"<p>Hello {escape(user_name)}.</p>" if user_name else ""
    return _page(title, f"""<h1>{escape(title)}</h1>{hello}<p>Read this sentence aloud:</p>
<p class="ref" id="reference">{escape(reference_text)}</p>
<div id="meter"><div id="level"></div></div>
<p><button id="record">Record</button><button id="stop" disabled>Stop</button><button id="submit" disabled>Submit</button></p>
<audio id="play" controls></audio><p id="status" role="status"></p><div id="result"></div>
<script type="application/json" id="cfg">{cfg}</script><script>{RECORDER_JS}</script>""")


def message_page(title: str, message: str) -> str:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
