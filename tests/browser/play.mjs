// Plays Mirror's player page in Debian's headless Chromium, over HTTP/3 forced to the
// test origin, and prints what the page measured (window.mirror) as JSON.
//
//   node tests/browser/play.mjs URL PORT SPKI [SAMPLES] [TIMEOUT_S]
// With SAMPLES = 0 it plays for TIMEOUT_S seconds and reports everything sampled.
// With PORT and SPKI both `-` it forces nothing: a plain http:// URL is played over
// HTTP/1.1, as through a cache tier.
import { launch } from './chromium.mjs';

const [url, port, spki, samplesArg, timeoutArg] = process.argv.slice(2);
const samples = Number(samplesArg || 8);
const timeoutMs = Number(timeoutArg || 40) * 1000;
const browser = await launch(port, spki);
let result;
try {
  const page = await browser.newPage();
  // Every playlist and media response the player got (the first 2,000): URL and status.
  const media = [];
  page.on('response', response => {
    const u = response.url();
    if (media.length < 2000 && /\.(m3u8|m4s|mp4)(\?|$)/.test(u)) {
      media.push({ url: u, status: response.status() });
    }
  });
  const started = Date.now();
  await page.goto(url);
  if (samples > 0) {
    await page.waitForFunction(
      n => window.mirror && (window.mirror.error || window.mirror.latencies.length >= n),
      samples, { timeout: timeoutMs, polling: 250 });
  } else {
    await page.waitForTimeout(timeoutMs);
  }
  result = await page.evaluate(() => ({
    ...window.mirror,
    pageProtocol: performance.getEntriesByType('navigation')[0]?.nextHopProtocol,
  }));
  result.elapsedMs = Date.now() - started;
  result.media = media;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
