// Publishes Chromium's fake camera and microphone to Mirror over WHIP, from Mirror's
// own publish page, and plays the stream with the player page (hls.js) in a second
// page, both over HTTP/3 forced to the test origin; prints what happened as JSON.
//
//   node tests/browser/whip.mjs ORIGIN PORT SPKI STREAM KEY [SAMPLES] [TIMEOUT_S]
//
// ORIGIN is https://127.0.0.1:PORT. The publisher leaves (its DELETE) once the player
// has reported SAMPLES latency samples, or at TIMEOUT_S.
import { launch } from './chromium.mjs';

const [origin, port, spki, stream, key, samplesArg, timeoutArg] = process.argv.slice(2);
const samples = Number(samplesArg || 8);
const timeoutMs = Number(timeoutArg || 60) * 1000;
const browser = await launch(port, spki, [
  // The fake camera (a moving pattern with a frame counter) and a beeping microphone,
  // granted without a prompt; ICE may use loopback (the test's only network).
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
]);
const result = {};
try {
  const publisher = await browser.newPage();
  publisher.on('console', m => { if (m.type() === 'error') (result.publisherErrors ||= []).push(m.text()); });
  await publisher.goto(`${origin}/publish?stream=${encodeURIComponent(stream)}#key=${encodeURIComponent(key)}`);
  await publisher.waitForFunction(
    () => window.mirrorPublish && (window.mirrorPublish.error || window.mirrorPublish.state === 'connected'),
    null, { timeout: 30000, polling: 100 });
  Object.assign(result, { publish: await publisher.evaluate(() => ({ ...window.mirrorPublish })) });
  if (!result.publish.error) {
    const player = await browser.newPage();
    await player.goto(`${origin}/?stream=${encodeURIComponent(stream)}`);
    await player.waitForFunction(
      n => window.mirror && (window.mirror.error || window.mirror.latencies.length >= n),
      samples, { timeout: timeoutMs, polling: 250 });
    result.player = await player.evaluate(() => ({ ...window.mirror }));
    // The publisher's own end: DELETE on its session's URL.
    await publisher.evaluate(() => window.mirrorPublish.stop());
    await publisher.waitForFunction(() => window.mirrorPublish.state === 'stopped',
      null, { timeout: 10000, polling: 100 });
    result.stopped = await publisher.evaluate(() => ({ ...window.mirrorPublish }));
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
