"""``GET /``: a page that speaks what is typed, playing the stream while it arrives.

It posts to ``/v1/audio/speech`` with ``response_format: "pcm"`` (16-bit, 24 kHz), reads the body with
``fetch``'s stream reader and schedules each piece with the Web Audio API as it comes, so playback starts
with the first piece. ``window.speechTimes`` records when playback started and when the last byte came;
``window.speechContexts`` counts the AudioContexts opened and closed: each is closed when its last piece has
played, or when the next request starts (the browser test reads both).
"""

from __future__ import annotations

import html
import json


def page(model: str, voices: tuple[str, ...], note: str) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in voices)
    # The model name goes into JavaScript, not HTML: a JSON string literal (with '<' escaped so no '</script>'
    # can end the script) keeps a name with a quote or a backslash (a folder name) from breaking the page.
    model_js = json.dumps(model).replace("<", "\\u003c")
    return _PAGE.replace("{MODEL}", model_js).replace("{OPTIONS}", options).replace("{NOTE}", html.escape(note))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>colab-tts: Orpheus</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}textarea{width:100%;height:6em}
#status{margin-top:1em;color:#444}</style></head>
<body><h1>Orpheus, streaming</h1><p>{NOTE}</p>
<textarea id="text">Hello there, this is Orpheus speaking.</textarea>
<p><label>voice <select id="voice">{OPTIONS}</select></label> <button id="speak">Speak</button></p>
<div id="status">ready</div>
<script>
const MODEL = {MODEL}, RATE = 24000;
window.speechTimes = null;
window.speechContexts = {opened: 0, closed: 0};
let playing = null;  // the last request's {ctx, fetching}, until its playback ends
function finish(p) {  // browsers cap the AudioContexts a page may hold open: close each one
  if (playing === p) playing = null;
  p.fetching.abort();  // a stream still arriving is cancelled (the server then aborts it)
  if (p.ctx.state !== "closed") p.ctx.close().then(() => { window.speechContexts.closed += 1; });
}
async function speak() {
  const status = document.getElementById("status");
  const t0 = performance.now();
  const times = {started: null, firstByte: null, lastByte: null, chunks: 0, samples: 0, error: null, done: false};
  window.speechTimes = times;
  if (playing) finish(playing);  // a new request ends the last one's playback
  const ctx = new AudioContext({sampleRate: RATE}), mine = playing = {ctx, fetching: new AbortController()};
  window.speechContexts.opened += 1;
  let at = 0, carry = null, last = null;
  try {
    await ctx.resume();
    at = ctx.currentTime + 0.05;
    const response = await fetch("/v1/audio/speech", {method: "POST", signal: mine.fetching.signal,
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: MODEL, input: document.getElementById("text").value,
                            voice: document.getElementById("voice").value, response_format: "pcm"})});
    if (!response.ok) { const e = await response.json(); throw new Error(e.error.message); }
    const reader = response.body.getReader();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      if (times.firstByte === null) times.firstByte = performance.now() - t0;
      let bytes = value;
      if (carry) { bytes = new Uint8Array(carry.length + value.length); bytes.set(carry); bytes.set(value, carry.length); carry = null; }
      if (bytes.length % 2) { carry = bytes.slice(bytes.length - 1); bytes = bytes.slice(0, bytes.length - 1); }
      const pcm = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
      if (!pcm.length) continue;
      const buffer = ctx.createBuffer(1, pcm.length, RATE), data = buffer.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
      const source = ctx.createBufferSource();
      source.buffer = buffer; source.connect(ctx.destination);
      at = Math.max(at, ctx.currentTime); source.start(at); at += buffer.duration; last = source;
      if (times.started === null) { times.started = performance.now() - t0; status.textContent = "playing..."; }
      times.chunks += 1; times.samples += pcm.length;
    }
    times.lastByte = performance.now() - t0;
    status.textContent = `${(times.samples / RATE).toFixed(2)} s of audio; playback began at ${(times.started / 1000).toFixed(2)} s, last byte at ${(times.lastByte / 1000).toFixed(2)} s`;
  } catch (err) {
    times.error = String(err.message || err);
    if (playing === mine) status.textContent = "error: " + times.error;  // else the next request replaced it
  }
  if (last && !times.error) last.onended = () => finish(mine);  // once the last piece has played
  else finish(mine);
  times.done = true;
}
document.getElementById("speak").addEventListener("click", speak);
</script></body></html>
"""
