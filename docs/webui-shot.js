// Screenshots of the Web UI for the README (docs/webui*.png), taken mid-batch.
// Needs Chromium from Debian (apt-get install chromium) and puppeteer-core from
// npm (npm install puppeteer-core@23); with worker --dev running a batch:
//   node docs/webui-shot.js URL OUT.png [TEXT-TO-WAIT-FOR] [TAB-TO-CLICK] [HEIGHT]
// e.g. URL http://127.0.0.1:8233/namespaces/default/workflows/ID/RUNID/history, tab Memo.
const puppeteer = require('puppeteer-core');
(async () => {
  const [url, out, waitText] = process.argv.slice(2);
  const b = await puppeteer.launch({executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']});
  const p = await b.newPage();
  await p.setViewport({width: 1440, height: +(process.argv[6]||1400)});
  await p.goto(url, {waitUntil: 'networkidle2', timeout: 60000}).catch(e => console.error('goto:', e.message));
  if (waitText) {
    await p.waitForFunction(t => document.body.innerText.includes(t), {timeout: 60000}, waitText).catch(e => console.error('wait:', e.message));
  }
  const click = process.argv[5];
  if (click) {
    await p.evaluate(t => { const el = [...document.querySelectorAll('a,button,[role=tab]')].find(e => e.innerText.trim().startsWith(t)); if (el) el.click(); }, click);
  }
  await new Promise(r => setTimeout(r, 3000));
  console.log((await p.evaluate(() => document.body.innerText)).slice(0, 3000));
  await p.screenshot({path: out, fullPage: false});
  await b.close();
})();
