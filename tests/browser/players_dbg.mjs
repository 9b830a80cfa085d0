// Plays a Mirror stream in a stock third-party player, embedded as a site owner would:
// the player's own API, its documented low-latency setting on, nothing else tuned. The
// page comes from a plain-HTTP origin of this script's own (the players from
// node_modules), the stream from Mirror over HTTP/3 (QUIC forced to it, its certificate
// trusted by SPKI hash), so every media request is a cross-origin one, as on a real site.
//
//   node tests/browser/players.mjs PLAYER URL PORT SPKI SECONDS [THROTTLE]
// PLAYER is hlsjs, shaka or vhs (video.js + @videojs/http-streaming). It plays for
// SECONDS after the first frame and prints JSON: latency samples (wall clock minus the
// EXT-X-PROGRAM-DATE-TIME of the frame on screen, as each player reports it, four a
// second), stalls (`waiting` after the first frame but for seeks), reloads (the media
// element emptied once playing), recovered errors (Shaka's, by code), jumps (seeks the
// player makes once playing: over a hole in its buffer), time to first frame, and what the
// browser's network stack saw for every playlist and media response (protocol, status,
// whether the HTTP cache answered it), and the picture height each time it changed (ms
// after the first frame), which shows a rendition switch in any player.
// THROTTLE (`10:550,25:-1`) limits the browser's download rate at those seconds after
// the first frame to that many kbit/s through DevTools' network emulation (-1 lifts it;
// Chromium applies it to HTTP/3 too).
// PLAYER_CONFIG (JSON in the environment) adds settings to the low-latency one: hls.js's
// Hls config or Shaka's player.configure (VHS takes none), for tuned runs.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';

const [player, url, port, spki, secondsArg, throttleArg] = process.argv.slice(2);
const throttles = (throttleArg || '').split(',').filter(Boolean).map(step => {
  const [at, kbps] = step.split(':').map(Number);
  return { at, kbps };
});
const seconds = Number(secondsArg || 30);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const modules = path.join(root, 'node_modules');

// Each player: the scripts it loads and the code that starts it on `video` and returns
// a function giving the program date of the frame on screen (or null).
const PLAYERS = {
  hlsjs: {
    scripts: ['hls.js/dist/hls.min.js'],
    start: `
      const hls = new Hls({ lowLatencyMode: true, ...EXTRA });
      hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) report.error = d.details; });
      hls.loadSource(URL_);
      hls.attachMedia(video);
      return () => hls.playingDate;`,
  },
  shaka: {
    scripts: ['shaka-player/dist/shaka-player.compiled.js'],
    start: `
      shaka.polyfill.installAll();
      const player = new shaka.Player();
      await player.attach(video);
      player.configure({ streaming: { lowLatencyMode: true } });
      player.configure(EXTRA);
      // Shaka tells recoverable errors too (a gap's missing segment, by design): only a
      // critical one is the player's failure.
      player.addEventListener('error', e => {
        const code = String(e.detail && e.detail.code);
        if (e.detail && e.detail.severity === shaka.util.Error.Severity.CRITICAL) {
          report.error = code;
          report.errorData = String(JSON.stringify(e.detail.data)).slice(0, 500);
        }
        else if (report.recovered.length < 50) report.recovered.push(code);
      });
      await player.load(URL_);
      return () => player.getPlayheadTimeAsDate();`,
  },
  vhs: {
    styles: ['video.js/dist/video-js.min.css'],
    // video.js's core without its bundled VHS, and the pinned VHS beside it.
    scripts: ['video.js/dist/alt/video.core.min.js',
      '@videojs/http-streaming/dist/videojs-http-streaming.min.js'],
    start: `
      video.classList.add('video-js');
      const player = videojs(video, { html5: { vhs: { llhls: true } }, liveui: true });
      player.on('error', () => { report.error = String(player.error() && player.error().message); });
      player.src({ src: URL_, type: 'application/x-mpegURL' });
      // VHS's convertToProgramTime wants timing only its TS transmuxer records, so the
      // date comes from the segment under the playhead: its PROGRAM-DATE-TIME plus the
      // offset into it, on the timeline VHS placed it at.
      return () => {
        const media = player.tech(true).vhs && player.tech(true).vhs.playlists.media();
        const t = player.currentTime();
        const segment = media && media.segments.find(s =>
          s.dateTimeObject && typeof s.start === 'number' && s.start <= t && t < s.end);
        return segment ? new Date(segment.dateTimeObject.getTime() + (t - segment.start) * 1000) : null;
      };`,
  },
};

const chosen = PLAYERS[player];
if (!chosen) {
  console.error(`unknown player ${player}: one of ${Object.keys(PLAYERS).join(', ')}`);
  process.exit(2);
}

const page = `<!doctype html><html><head><meta charset="utf-8">
${(chosen.styles || []).map(s => `<link rel="stylesheet" href="/m/${s}">`).join('\n')}
<script>
window.__sbs = [];
window.__appends = [];
const __add = MediaSource.prototype.addSourceBuffer;
MediaSource.prototype.addSourceBuffer = function (mime) {
  const sb = __add.call(this, mime);
  const index = window.__sbs.length;
  window.__sbs.push([mime, sb]);
  const __append = sb.appendBuffer;
  sb.appendBuffer = function (data) {
    const before = [];
    for (let i = 0; i < sb.buffered.length; i++) before.push([+sb.buffered.start(i).toFixed(3), +sb.buffered.end(i).toFixed(3)]);
    if (window.__appends.length < 600) window.__appends.push([index, sb.mode, +sb.timestampOffset.toFixed(4), +sb.appendWindowStart.toFixed(3), +(sb.appendWindowEnd === Infinity ? -1 : sb.appendWindowEnd).toFixed(3), data.byteLength, Math.round(performance.now()), before.slice(-2)]);
    return __append.call(this, data);
  };
  return sb;
};
</script>
${chosen.scripts.map(s => `<script src="/m/${s}"></script>`).join('\n')}
</head><body><video id="video" muted autoplay playsinline width="640" height="360"></video>
<script>
const URL_ = ${JSON.stringify(url)};
const EXTRA = ${process.env.PLAYER_CONFIG || '{}'};
const video = document.getElementById('video');
const report = window.report = { latencies: [], stalls: 0, seekWaits: 0, jumps: 0, reloads: 0, recovered: [], firstFrameMs: null, error: null, events: [], heights: [] };
const pageStart = performance.now();
// A stall is running out of media while playing; waiting on a seek (players jump to
// their live position once playing) is counted apart.
video.addEventListener('waiting', () => {
  if (report.firstFrameMs === null) return;
  if (video.seeking) report.seekWaits++; else report.stalls++;
});
// A seek the player makes itself once it has played for a second: jumping a hole in its
// buffer (Shaka and VHS do), which skips media as a stall would have shown it late.
video.addEventListener('seeking', () => {
  if (report.firstFrameMs !== null && performance.now() - pageStart > report.firstFrameMs + 1000) {
    report.jumps++;
  }
});
// The first 40 playback events (ms after page start, position), for a failure's report.
for (const type of ['playing', 'waiting', 'seeking', 'seeked']) {
  video.addEventListener(type, () => {
    if (report.events.length < 40) {
      const ranges = [];
      for (let i = 0; i < video.buffered.length; i++) {
        ranges.push([+video.buffered.start(i).toFixed(3), +video.buffered.end(i).toFixed(3)]);
      }
      report.events.push([type, Math.round(performance.now() - pageStart), +video.currentTime.toFixed(3), ranges]);
    }
  });
}
video.addEventListener('playing', () => {
  if (report.firstFrameMs === null) report.firstFrameMs = performance.now() - pageStart;
});
// What the media element itself says when it fails (Chrome's reason, e.g. an append
// its demuxer refused).
video.addEventListener('error', () => {
  if (!report.mediaError) report.mediaError = String(video.error && video.error.message);
});
// A player that gives up on its media element (a recovery that detaches it, a reload of
// the stream) empties it: counted once playing.
video.addEventListener('emptied', () => {
  if (report.firstFrameMs !== null) report.reloads++;
});
(async () => {
  const programDate = await (async () => { ${chosen.start} })();
  setInterval(() => {
    if (report.firstFrameMs !== null && report.heights.length < 500) {
      const last = report.heights[report.heights.length - 1];
      if (!last || last[1] !== video.videoHeight) {
        report.heights.push([Math.round(performance.now() - pageStart - report.firstFrameMs), video.videoHeight]);
      }
    }
    const date = programDate();
    if (!date || video.paused || report.firstFrameMs === null) return;
    report.latencies.push((Date.now() - date.getTime()) / 1000);
  }, 250);
})().catch(e => { report.error = String(e); });
</script></body></html>`;

// The site's origin: the page, and the players' files from node_modules.
const site = http.createServer((req, res) => {
  const wanted = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  if (wanted === '/') {
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end(page);
  }
  const file = path.join(modules, wanted.replace(/^\/m\//, ''));
  if (!wanted.startsWith('/m/') || !file.startsWith(modules + path.sep) || !fs.existsSync(file)) {
    res.writeHead(404);
    return res.end();
  }
  res.writeHead(200, { 'content-type': file.endsWith('.css') ? 'text/css' : 'text/javascript' });
  fs.createReadStream(file).pipe(res);
});
await new Promise(resolve => site.listen(0, '127.0.0.1', resolve));

const browser = await launch(port, spki);
let result;
try {
  const tab = await browser.newPage();
  // The network stack's own view (CDP), which resource timing hides cross-origin: the
  // protocol of each response and whether the browser's HTTP cache gave it.
  const network = [];
  const cdp = await tab.context().newCDPSession(tab);
  await cdp.send('Network.enable');
  cdp.on('Network.responseReceived', ({ response }) => {
    if (network.length < 20000 && /\.(m3u8|m4s|mp4)(\?|$)/.test(response.url)) {
      network.push({ url: response.url, status: response.status, protocol: response.protocol,
        cached: Boolean(response.fromDiskCache || response.fromPrefetchCache) });
    }
  });
  const started = Date.now();
  await tab.goto(`http://127.0.0.1:${site.address().port}/`);
  await tab.waitForFunction(() => window.report.firstFrameMs !== null || window.report.error,
    null, { timeout: 30000, polling: 100 });
  const playing = Date.now();
  for (const { at, kbps } of throttles) {
    await tab.waitForTimeout(Math.max(0, playing + at * 1000 - Date.now()));
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, uploadThroughput: -1,
      downloadThroughput: kbps < 0 ? -1 : kbps * 1000 / 8,
    });
  }
  await tab.waitForTimeout(Math.max(0, playing + seconds * 1000 - Date.now()));
  result = await tab.evaluate(() => {
    const v = document.querySelector('video');
    const ranges = [];
    for (let i = 0; i < v.buffered.length; i++) ranges.push([v.buffered.start(i), v.buffered.end(i)]);
    return { ...window.report, buffered: ranges, appends: window.__appends };
  });
  result.elapsedMs = Date.now() - started;
  result.player = player;
  result.protocols = [...new Set(network.map(r => r.protocol))];
  result.responses = network.length; result.urls = network.map(r => r.url.replace(/.*\/cam\//, ''));
  result.cachedPlaylists = network.filter(r => r.cached && r.url.includes('.m3u8')).length;
  result.failed = network.filter(r => r.status >= 400).map(r => `${r.status} ${r.url}`).slice(0, 20);
} finally {
  await browser.close();
  site.close();
}
console.log(JSON.stringify(result));
