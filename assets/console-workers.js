// Freshet console, workers: delivery streams (Firehose_20150804 ListDeliveryStreams and
// DescribeDeliveryStream: status, source, destination, the last delivery error) and
// analytics applications (KinesisAnalytics_20150814 ListApplications and
// DescribeApplication: status, inputs, outputs), with their figures from /metrics
// (records and bytes delivered, backlog, failures; records read, rows out, lag, errors).
// The page calls the same JSON 1.1 API as any SDK, on the same server. Plain script, no
// build step; served from assets/ (src/api/console.rs).
//
// For automated tests the page keeps what it shows on `window.freshetWorkers`:
// `polls`, `delivery` (name -> what its row shows) and `analytics` (likewise).
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  const deliveryBody = $('#delivery-streams tbody');
  const analyticsBody = $('#analytics-apps tbody');
  const status = $('#workers-status');
  const POLL_MS = 2000;

  const state = { polls: 0, delivery: {}, analytics: {}, error: null };
  window.freshetWorkers = state;

  async function call(target, body) {
    const resp = await fetch('/', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': target },
      body: JSON.stringify(body || {}),
    });
    const doc = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const type = String(doc.__type || resp.status).split('#').pop();
      throw new Error(`${type}: ${doc.message || doc.Message || resp.statusText}`);
    }
    return doc;
  }

  const count = (n) => (n === undefined ? '–' : n >= 1e6 ? `${(n / 1e6).toFixed(1)} M`
    : n >= 1e4 ? `${(n / 1e3).toFixed(1)} k` : String(Math.round(n)));
  const bytes = (n) => (n === undefined ? '–' : n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB`
    : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${Math.round(n)} B`);

  function destinationOf(d) {
    const dest = (d.Destinations || [])[0] || {};
    if (dest.HttpEndpointDestinationDescription) {
      const e = dest.HttpEndpointDestinationDescription.EndpointConfiguration || {};
      return `HTTP ${e.Url || ''}`;
    }
    const s3 = dest.ExtendedS3DestinationDescription || dest.S3DestinationDescription;
    if (s3) return `S3 ${String(s3.BucketARN || '').replace('arn:aws:s3:::', '')}/${s3.Prefix || ''}`;
    return '';
  }

  function sourceOf(d) {
    const k = d.Source && d.Source.KinesisStreamSourceDescription;
    if (k) return `stream ${String(k.KinesisStreamARN || '').split('/').pop()}`;
    return 'Direct PUT';
  }

  function cells(row, values) {
    row.replaceChildren(...values.map(([cls, text]) => {
      const td = document.createElement('td');
      td.className = cls;
      td.textContent = text;
      return td;
    }));
  }

  function render(body, rows, kind) {
    const keep = new Set(Object.keys(rows));
    for (const tr of [...body.querySelectorAll('tr')]) {
      if (!keep.has(tr.dataset.name)) tr.remove();
    }
    for (const name of Object.keys(rows).sort()) {
      let tr = [...body.querySelectorAll('tr')].find((r) => r.dataset.name === name);
      if (!tr) {
        tr = document.createElement('tr');
        tr.className = kind;
        tr.dataset.name = name;
        body.append(tr);
      }
      cells(tr, rows[name].cells);
      tr.classList.toggle('failing', !!rows[name].error);
    }
    if (!body.children.length) {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = document.createElement('td');
      td.colSpan = body.closest('table').querySelectorAll('th').length;
      td.textContent = kind === 'delivery-stream' ? 'No delivery streams.' : 'No analytics applications.';
      tr.append(td);
      body.append(tr);
    } else {
      for (const empty of body.querySelectorAll('tr.empty')) empty.remove();
    }
  }

  async function pollDelivery(m) {
    const names = [];
    let start;
    for (;;) {
      const page = await call('Firehose_20150804.ListDeliveryStreams',
        start ? { ExclusiveStartDeliveryStreamName: start } : {});
      names.push(...(page.DeliveryStreamNames || []));
      if (!page.HasMoreDeliveryStreams || !names.length) break;
      start = names[names.length - 1];
    }
    const rows = {};
    await Promise.all(names.map(async (name) => {
      let d;
      try {
        d = (await call('Firehose_20150804.DescribeDeliveryStream', { DeliveryStreamName: name }))
          .DeliveryStreamDescription;
      } catch (e) {
        return; // deleted meanwhile
      }
      const error = d.FailureDescription ? `${d.FailureDescription.Type}: ${d.FailureDescription.Details}` : '';
      const shown = {
        status: d.DeliveryStreamStatus,
        source: sourceOf(d),
        destination: destinationOf(d),
        delivered: m.freshet_delivery_delivered_records_total[name] || 0,
        deliveredBytes: m.freshet_delivery_delivered_bytes_total[name] || 0,
        backlog: m.freshet_delivery_backlog_records[name] || 0,
        failures: m.freshet_delivery_failures_total[name] || 0,
        error,
      };
      state.delivery[name] = shown;
      rows[name] = {
        error,
        cells: [
          ['name', name], ['state', shown.status], ['source', shown.source],
          ['destination', shown.destination], ['delivered', count(shown.delivered)],
          ['delivered-bytes', bytes(shown.deliveredBytes)], ['backlog', count(shown.backlog)],
          ['failures', count(shown.failures)], ['error', error || '–'],
        ],
      };
    }));
    for (const name of Object.keys(state.delivery)) if (!(name in rows)) delete state.delivery[name];
    render(deliveryBody, rows, 'delivery-stream');
  }

  async function pollAnalytics(m) {
    const apps = [];
    let start;
    for (;;) {
      const page = await call('KinesisAnalytics_20150814.ListApplications',
        start ? { ExclusiveStartApplicationName: start } : {});
      const got = page.ApplicationSummaries || [];
      apps.push(...got);
      if (!page.HasMoreApplications || !got.length) break;
      start = got[got.length - 1].ApplicationName;
    }
    const rows = {};
    for (const app of apps) {
      const name = app.ApplicationName;
      const shown = {
        status: app.ApplicationStatus,
        read: m.freshet_analytics_records_total[name] || 0,
        rowsOut: m.freshet_analytics_rows_out_total[name] || 0,
        lagMs: m.freshet_analytics_lag_milliseconds[name],
        errors: m.freshet_analytics_errors_total[name] || 0,
      };
      state.analytics[name] = shown;
      rows[name] = {
        error: shown.errors > 0,
        cells: [
          ['name', name], ['state', shown.status], ['read', count(shown.read)],
          ['rows-out', count(shown.rowsOut)],
          ['lag', shown.lagMs === undefined ? '–' : `${(shown.lagMs / 1000).toFixed(1)} s`],
          ['errors', count(shown.errors)],
        ],
      };
    }
    for (const name of Object.keys(state.analytics)) if (!(name in rows)) delete state.analytics[name];
    render(analyticsBody, rows, 'analytics-app');
  }

  async function poll() {
    try {
      const resp = await fetch('/metrics');
      const text = resp.ok ? await resp.text() : '';
      const { metricsByLabel } = window.freshetConsoleApi;
      const d = metricsByLabel(text, 'delivery_stream', [
        'freshet_delivery_delivered_records_total', 'freshet_delivery_delivered_bytes_total',
        'freshet_delivery_backlog_records', 'freshet_delivery_failures_total']);
      const a = metricsByLabel(text, 'application', [
        'freshet_analytics_records_total', 'freshet_analytics_rows_out_total',
        'freshet_analytics_lag_milliseconds', 'freshet_analytics_errors_total']);
      await Promise.all([pollDelivery(d), pollAnalytics(a)]);
      state.polls += 1;
      state.error = null;
      status.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
      status.classList.remove('error');
    } catch (e) {
      state.error = e.message;
      status.textContent = `Cannot read the workers: ${e.message}`;
      status.classList.add('error');
    }
  }

  poll();
  setInterval(poll, POLL_MS);
})();
