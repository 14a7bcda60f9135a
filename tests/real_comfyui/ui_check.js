#!/usr/bin/env node
// ui_check.js - load a UI-format workflow into a running ComfyUI frontend (headless Chromium) and
// report what a user would see, plus what the frontend would queue.
//
//   node ui_check.js --url http://127.0.0.1:8188 --workflow wf.json --out shot.png --report r.json
//        [--wait 3000] [--chromium /usr/bin/chromium] [--width 1600] [--height 1000]
//        [--clip x,y,w,h]      (screenshot only that part of the page, e.g. for a thumbnail)
//        [--thumbnail out.jpg] (fit the graph into the view and save the canvas alone as JPEG)
//        [--templates]         (open the template browser first; report its text as templatesText)
//        [--run]               (also queue the workflow from the UI and wait for it; reports ws events
//                               seen by the page and the text our extension drew on the sampler)
//
// Report: consoleErrors, pageErrors, failedRequests, missingNodeTypes (workflow types absent from
// /object_info), dialogs (visible dialog texts), prompt (app.graphToPrompt().output: the API graph the
// frontend would queue), extensions (non-Comfy frontend extensions), nodeCount.
// Needs playwright-core (NODE_PATH) and a Chromium binary. Exit 0 when the page loaded, 2 otherwise;
// the caller judges the report.
const fs = require('fs');
const { chromium } = require('playwright-core');

function parse(argv) {
  const a = { wait: 3000, width: 1600, height: 1000, chromium: process.env.XDYNA_CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => argv[++i];
    if (k === '--url') a.url = v().replace(/\/+$/, '');
    else if (k === '--workflow') a.workflow = v();
    else if (k === '--out') a.out = v();
    else if (k === '--report') a.report = v();
    else if (k === '--wait') a.wait = Number(v());
    else if (k === '--chromium') a.chromium = v();
    else if (k === '--width') a.width = Number(v());
    else if (k === '--height') a.height = Number(v());
    else if (k === '--clip') { const [x, y, w, h] = v().split(',').map(Number); a.clip = { x, y, width: w, height: h }; }
    else if (k === '--run') a.run = true;
    else if (k === '--templates') a.templates = true;
    else if (k === '--thumbnail') a.thumbnail = v();
    else { console.error(`ui_check.js: unknown argument ${k}`); process.exit(2); }
  }
  if (!a.url || !a.workflow || !a.out || !a.report) { console.error('ui_check.js: --url --workflow --out --report are required'); process.exit(2); }
  return a;
}

async function dialogs(page) {
  return page.evaluate(() => [...document.querySelectorAll('[role="dialog"], [role="alertdialog"], .p-dialog, .comfy-modal, .p-toast-message')]
    .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')
    .map((el) => el.innerText.trim().slice(0, 1500)).filter((t) => t.length > 0));
}

(async () => {
  const a = parse(process.argv.slice(2));
  const workflow = JSON.parse(fs.readFileSync(a.workflow, 'utf8'));
  const report = { consoleErrors: [], consoleWarnings: [], pageErrors: [], failedRequests: [], missingNodeTypes: [] };
  const browser = await chromium.launch({ executablePath: a.chromium, headless: true,
                                          args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  try {
    const page = await browser.newPage({ viewport: { width: a.width, height: a.height } });
    page.on('console', (m) => {
      const where = m.location() && m.location().url ? ` [${m.location().url}]` : '';
      if (m.type() === 'error') report.consoleErrors.push(m.text() + where);
      else if (m.type() === 'warning') report.consoleWarnings.push(m.text());
    });
    page.on('pageerror', (e) => report.pageErrors.push(String((e && e.stack) || e)));
    page.on('response', (r) => { if (r.status() >= 400) report.failedRequests.push(`${r.status()} ${r.url()}`); });
    page.on('requestfailed', (r) => report.failedRequests.push(`FAILED ${r.url()} ${r.failure() && r.failure().errorText}`));
    // A fresh user folder opens the template browser, and frontend 1.27 throws at start unless
    // these two settings exist: store them like a returning user would have them.
    for (const [k, v] of [['Comfy.TutorialCompleted', true], ['Comfy.Canvas.LeftMouseClickBehavior', 'panning'],
                          ['Comfy.Canvas.MouseWheelScroll', 'zoom']]) {
      await page.request.post(`${a.url}/settings/${k}`, { data: JSON.stringify(v), headers: { 'Content-Type': 'application/json' } });
    }
    await page.goto(a.url + '/', { waitUntil: 'domcontentloaded', timeout: 60000 });
    await page.waitForFunction(() => window.app && window.app.graph && window.app.canvas, null, { timeout: 60000 });
    await page.waitForTimeout(1000);
    for (let i = 0; i < 3; i++) await page.keyboard.press('Escape');
    const known = new Set(await page.evaluate(async () => Object.keys(await (await fetch('/object_info')).json())));
    const frontendOnly = new Set(['Note', 'MarkdownNote', 'Reroute', 'PrimitiveNode']);
    report.missingNodeTypes = [...new Set(workflow.nodes.map((n) => n.type))].filter((t) => !known.has(t) && !frontendOnly.has(t));
    report.errorsBeforeLoad = report.consoleErrors.length + report.pageErrors.length;

    if (a.templates) {
      // The template browser as a user opens it (menu command), on this pack's cards; then a fresh page.
      await page.evaluate(async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); });
      await page.waitForTimeout(2000);
      // the browser opens on "All Templates": find this pack's cards with its search box
      // this pack's category in the browser's navigation (1.4x), else its search box
      const category = page.getByText('ComfyUI-XDyna', { exact: true });
      if (await category.count()) await category.first().click();
      else await page.getByPlaceholder(/search/i).first().fill('X-Dyna');
      const dialogText = () => page.evaluate(() => [...document.querySelectorAll('[role="dialog"], .p-dialog')]
        .filter((el) => el.getClientRects().length > 0).map((el) => el.innerText).join('\n'));
      // the filtered cards can take seconds on a loaded machine: wait (up to 20 s) for this pack's titles
      for (let i = 0; i < 20 && !/X-Dyna: /.test(await dialogText()); i++) await page.waitForTimeout(1000);
      await page.waitForTimeout(1000);
      report.templatesText = await dialogText();
      await page.goto(a.url + '/', { waitUntil: 'domcontentloaded', timeout: 60000 });
      await page.waitForFunction(() => window.app && window.app.graph && window.app.canvas, null, { timeout: 60000 });
      await page.waitForTimeout(1000);
      for (let i = 0; i < 3; i++) await page.keyboard.press('Escape');
    }

    await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, workflow);
    await page.waitForTimeout(a.wait);
    report.dialogs = await dialogs(page);
    report.nodeCount = await page.evaluate(() => (window.app.graph._nodes || window.app.graph.nodes || []).length);
    report.extensions = await page.evaluate(() => (window.app.extensions || []).map((e) => e.name).filter((n) => !/^Comfy\./.test(n)));
    report.prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
    report.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
    // every node's widgets [name, type] (the upload button and the video player the frontend adds)
    report.widgets = await page.evaluate(() => (window.app.graph._nodes || window.app.graph.nodes || [])
      .map((n) => ({ type: n.type, widgets: (n.widgets || []).map((w) => [String(w.name), String(w.type)]) })));
    await page.screenshot(a.clip ? { path: a.out, clip: a.clip } : { path: a.out });
    // newer frontends (1.4x) report missing models as errors ("N errors found ... View details", a side
    // panel) instead of a dialog: open the details and keep the page's text
    const details = page.getByText('View details', { exact: true });
    if (await details.count()) {
      await details.first().click();
      await page.waitForTimeout(1500);
    }
    report.pageText = await page.evaluate(() => document.body.innerText.slice(0, 50000));

    if (a.thumbnail) {
      // Fit every node into the canvas, draw, and take the canvas pixels (no DOM overlays).
      const data = await page.evaluate(async () => {
        const c = window.app.canvas;
        const nodes = window.app.graph._nodes || window.app.graph.nodes;
        let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
        for (const n of nodes) {
          x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
          x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        const el = c.canvas;
        const margin = 20;
        c.show_info = false; // no render statistics in the corner
        c.low_quality_zoom_threshold = 0; // draw titles and widgets at any zoom (older frontends)
        c.low_quality_rendering_threshold = 0; // (newer ones)
        const scale = Math.min((el.width - 2 * margin) / (x1 - x0), (el.height - 2 * margin) / (y1 - y0), 1);
        c.ds.scale = scale;
        c.ds.offset = [margin / scale - x0, margin / scale - y0];
        c.setDirty(true, true);
        c.draw(true, true);
        await new Promise((r) => setTimeout(r, 300));
        c.draw(true, true);
        return el.toDataURL('image/jpeg', 0.9);
      });
      fs.writeFileSync(a.thumbnail, Buffer.from(data.split(',')[1], 'base64'));
    }

    if (a.run) {
      // Queue from the UI like a user (the extension sees the same websocket events) and record
      // the sampler label our extension draws while the run goes on.
      report.labels = [];
      await page.evaluate(() => {
        window.__xdynaEvents = [];
        for (const t of ['progress', 'executing', 'executed', 'execution_error', 'execution_success'])
          window.app.api.addEventListener(t, (e) => {
            const d = e.detail;
            window.__xdynaEvents.push([t, d !== null && typeof d === 'object' ? (d.node ?? d.node_id ?? null) : d]);
          });
      });
      await page.evaluate(async () => { await window.app.queuePrompt(0, 1); });
      const t0 = Date.now();
      for (;;) {
        const st = await page.evaluate(() => {
          const s = (window.app.graph._nodes || window.app.graph.nodes).find((n) => n.type === 'XDynaSampler');
          const ev = window.__xdynaEvents;
          const done = ev.some(([t]) => t === 'execution_success' || t === 'execution_error') ||
            ev.some(([t, n]) => t === 'executing' && n === null);
          return { label: s && s.xdynaProgress ? s.xdynaProgress.text : null, done };
        });
        if (st.label && report.labels[report.labels.length - 1] !== st.label) report.labels.push(st.label);
        if (st.done || Date.now() - t0 > 300000) break;
        await page.waitForTimeout(150);
      }
      await page.waitForTimeout(1500);
      report.events = await page.evaluate(() => window.__xdynaEvents);
      report.afterRun = await page.evaluate(() => (window.app.graph._nodes || window.app.graph.nodes)
        .filter((n) => /^XDyna/.test(n.type))
        .map((n) => ({ id: n.id, type: n.type, progress: n.xdynaProgress ? n.xdynaProgress.text : null,
                       preview: n.xdynaPreview ? { frames: n.xdynaPreview.frames, loaded: !!n.xdynaPreview.loaded } : null })));
      await page.screenshot({ path: a.out.replace(/\.png$/, '') + '-run.png' });
    }
  } catch (e) {
    report.fatal = String((e && e.stack) || e);
  }
  await browser.close();
  fs.writeFileSync(a.report, JSON.stringify(report, null, 1));
  process.exit(report.fatal ? 2 : 0);
})();
