// Debian's Chromium, headless, as every browser test starts it: no sandbox (root), no
// background traffic (the machine's network is closed), autoplay allowed, and (unless
// PORT and SPKI are both `-`) QUIC forced to 127.0.0.1:PORT with the server's
// certificate trusted by its SPKI hash. `extra` adds flags.
import { chromium } from 'playwright-core';

export function launch(port, spki, extra = []) {
  const quic = port === '-' && spki === '-' ? [] : [
    '--enable-quic', `--origin-to-force-quic-on=127.0.0.1:${port}`,
    `--ignore-certificate-errors-spki-list=${spki}`,
  ];
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
      ...quic, ...extra,
    ],
  });
}
