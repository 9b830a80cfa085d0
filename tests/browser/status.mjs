// Opens Mirror's page in Debian's headless Chromium over HTTP/3 (as play.mjs does),
// waits for the status view to have sampled /metrics a few times, reads it twice
// (3 s apart, so the test can see the plots move), keeps a screenshot, and prints what
// it read as JSON.
//
//   node tests/browser/status.mjs URL PORT SPKI SCREENSHOT
import { launch } from './chromium.mjs';

const [url, port, spki, screenshot] = process.argv.slice(2);
const browser = await launch(port, spki);
let result;
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 1100 } });
  await page.goto(url);
  const read = () => page.evaluate(() => ({
    status: JSON.parse(JSON.stringify(window.mirrorStatus)),
    table: [...document.querySelectorAll('#status tbody tr')]
      .map(tr => [...tr.cells].map(td => td.textContent)),
    latencies: window.mirror.latencies.length,
  }));
  await page.waitForFunction(
    () => window.mirrorStatus && (window.mirrorStatus.error ||
      (window.mirrorStatus.samples >= 6 && window.mirror.latencies.length > 0)),
    null, { timeout: 40000, polling: 250 });
  const first = await read();
  await page.waitForTimeout(3000);
  const second = await read();
  await page.screenshot({ path: screenshot, fullPage: true });
  result = { first, second };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
