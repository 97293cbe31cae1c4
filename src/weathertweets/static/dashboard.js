// Weather Tweets live page: one EventSource, one render per snapshot, no framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const LOCALE = "es";  // one number locale for the whole page: 1.234,5
const fmt = new Intl.NumberFormat(LOCALE);
const fixed = (value, digits) => new Intl.NumberFormat(LOCALE,
  { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(value);
const significant = (value) => new Intl.NumberFormat(LOCALE, { maximumSignificantDigits: 3 }).format(value);
// Energy and mass in the unit that reads best: 0,42 Wh rather than 4.2e-4 kWh.
function scaled(value, units) {
  for (const [factor, unit] of units) if (Math.abs(value) >= factor) return `${significant(value / factor)} ${unit}`;
  const [factor, unit] = units[units.length - 1];
  return `${significant(value / factor)} ${unit}`;
}
const energyText = (kwh) => scaled(kwh, [[1, "kWh"], [1e-3, "Wh"], [1e-6, "mWh"]]);
const massText = (grams) => scaled(grams, [[1000, "kg"], [1, "g"], [1e-3, "mg"]]);
const PALETTE = ["#38bdf8", "#f472b6", "#facc15", "#4ade80", "#fb923c", "#a78bfa", "#f87171",
  "#2dd4bf", "#94a3b8"];
const CONDITION_COLOURS = { heat: "#f97316", cold: "#60a5fa", rain: "#2563eb", storm: "#a855f7",
  snow: "#e2e8f0", wind: "#2dd4bf", fog: "#94a3b8", clear: "#facc15", other: "#64748b" };
const dot = (c) => `<i class="dot" style="background:${CONDITION_COLOURS[c] || "#64748b"}"></i>`;
let mapReady = false;
let selected = null;
let lastCountries = "";

function text(id, value) { const el = $(id); if (el.textContent !== value) el.textContent = value; }
function number(value) { return value === null || value === undefined ? "–" : fmt.format(value); }
function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${fmt.format(Math.round(value * 1000))} ms` : `${fixed(value, 2)} s`;
}
function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function bars(container, rows, limit) {
  const max = rows.length ? rows[0][1] : 1;
  container.innerHTML = rows.slice(0, limit).map(([name, n]) =>
    `<div class="bar" data-name="${escapeHtml(name)}"><span title="${escapeHtml(name)}">${escapeHtml(name)}</span>` +
    `<div class="fill" style="width:${Math.max(1, (100 * n) / max)}%"></div><span>${fmt.format(n)}</span></div>`).join("");
}

function donut(rows, total) {
  const top = rows.slice(0, 8);
  const rest = total - top.reduce((sum, [, n]) => sum + n, 0);
  if (rest > 0) top.push(["Otros", rest]);
  let angle = -Math.PI / 2;
  const arcs = top.map(([name, n], i) => {
    const sweep = total ? (2 * Math.PI * n) / total : 0;
    const a0 = angle, a1 = angle + Math.min(sweep, 2 * Math.PI - 1e-6);
    angle += sweep;
    const p = (a) => `${100 + 90 * Math.cos(a)},${100 + 90 * Math.sin(a)}`;
    const large = a1 - a0 > Math.PI ? 1 : 0;
    return `<path d="M100,100 L${p(a0)} A90,90 0 ${large} 1 ${p(a1)} Z" fill="${PALETTE[i % PALETTE.length]}"><title>${escapeHtml(name)}: ${n}</title></path>`;
  });
  $("share").innerHTML = arcs.join("") + '<circle cx="100" cy="100" r="50" fill="#1e293b"/>';
  $("share-legend").innerHTML = top.map(([name, n], i) =>
    `<li><i style="background:${PALETTE[i % PALETTE.length]}"></i>${escapeHtml(name)} ${total ? Math.round((100 * n) / total) : 0}%</li>`).join("");
}

function spark(points) {
  const svg = $("rate-chart");
  if (points.length < 2) { svg.innerHTML = ""; return; }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const max = Math.max(1, ...points.map((p) => p.rate));
  const xy = points.map((p) => `${(300 * (p.t - t0)) / Math.max(1, t1 - t0)},${60 - (58 * p.rate) / max}`);
  svg.innerHTML = `<polyline points="${xy.join(" ")}"/>`;
  const span = t1 - t0;
  text("rate-window", span < 90 ? `${Math.round(span)} s` : `${Math.round(span / 6) / 10} min`);
}

async function loadMap() {
  try {
    const response = await fetch("/static/vendor-world.svg");
    if (!response.ok) throw new Error(response.status);
    $("map").innerHTML = await response.text();
    mapReady = true;
  } catch (error) {
    $("map").innerHTML = '<p class="sub">The world map is not installed (run tools/assets/vendor.sh); counts are in the table.</p>';
  }
}

function paintMap(iso) {
  if (!mapReady) return;
  const max = Math.max(1, ...Object.values(iso));
  let painted = 0;
  for (const path of document.querySelectorAll("#map path")) {
    const n = iso[path.id] || 0;
    if (n > 0) {
      const level = Math.log(1 + n) / Math.log(1 + max);
      path.style.fill = `hsl(199, 89%, ${78 - 50 * level}%)`;
      path.dataset.count = n;
      painted += 1;
    } else {
      path.style.fill = "";
      delete path.dataset.count;
    }
    const title = path.querySelector("title") || path.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "title"));
    title.textContent = `${path.getAttribute("aria-label")}: ${n}`;
  }
  $("map").dataset.painted = painted;
}

function countrySelect(countries) {
  const names = Object.keys(countries);
  const key = names.slice().sort().join("|");
  if (key === lastCountries) return;
  lastCountries = key;
  const select = $("country-select");
  select.innerHTML = names.slice().sort((a, b) => a.localeCompare(b, "es"))
    .map((name) => `<option>${escapeHtml(name)}</option>`).join("");
  if (!selected || !countries[selected]) selected = names[0] || null;
  if (selected) select.value = selected;
}

async function loadCountry() {
  if (!selected) return;
  const response = await fetch(`/api/v1/countries/${encodeURIComponent(selected)}`, { headers: { accept: "application/json" } });
  if (!response.ok) return;
  const data = await response.json();
  bars($("country-texts"), data.texts.map((t) => [t.texto, t.count]), 10);
  $("country-texts").dataset.pais = data.pais;
  $("country-texts").dataset.total = data.total;
}

function render(s) {
  text("total", number(s.total));
  text("archived", number(s.archived));
  const rows = Object.entries(s.countries);
  text("countries-count", number(rows.length));
  bars($("country-bars"), rows, 250);
  donut(rows, s.total);
  countrySelect(s.countries);
  paintMap(s.map.iso);
  const unknown = Object.entries(s.map.unknown);
  text("map-unknown", unknown.length ? unknown.map(([p, n]) => `${p} (${n})`).join(", ") : "none");
  const last = s.rates.length ? s.rates[s.rates.length - 1].rate : null;
  text("rate-now", last === null ? "–" : fmt.format(Math.round(last)));
  spark(s.rates);
  text("latency-p50", seconds(s.latency.p50));
  text("latency-p95", seconds(s.latency.p95));
  text("latency-sample", number(s.latency.sample));
  if (s.energy) {
    const perK = s.energy.joules_per_1000_tweets;
    text("energy-j1000", perK === null ? "–" : fixed(perK, 1));
    text("energy-joules", fixed(s.energy.joules, 1));
    text("energy-kwh", energyText(s.energy.kwh));
    text("energy-co2", massText(s.energy.gco2));
    text("energy-model", `${s.energy.model}. Scope: ${s.energy.scope}.`);
  }
  $("conditions").innerHTML = Object.entries(s.conditions).map(([c, n]) =>
    `<span class="chip" data-condition="${c}">${dot(c)}${c} ${fmt.format(n)}</span>`).join("");
  $("weather").innerHTML = Object.entries(s.weather)
    .map(([pais, w]) => [pais, w, Object.values(w.counts).reduce((a, b) => a + b, 0)])
    .sort((a, b) => b[2] - a[2])
    .map(([pais, w, n]) => `<tr data-pais="${escapeHtml(pais)}"><td>${escapeHtml(pais)}</td><td>${dot(w.dominant)}${w.dominant}</td><td>${fmt.format(n)}</td></tr>`).join("");
  $("recent").innerHTML = s.recent.map((t) =>
    `<tr><td>${new Date(t.received_at).toLocaleTimeString(LOCALE)}</td><td>${escapeHtml(t.pais)}</td><td>${escapeHtml(t.texto)}</td></tr>`).join("");
  document.body.dataset.at = s.at;
}

function connect() {
  const source = new EventSource("/api/v1/live");
  source.onopen = () => { text("status", "live"); $("status").classList.add("live"); };
  source.onerror = () => { text("status", "reconnecting…"); $("status").classList.remove("live"); };
  let ticks = 0;
  source.onmessage = (event) => {
    const started = performance.now();
    render(JSON.parse(event.data));
    document.body.dataset.renderMs = String(Math.round((performance.now() - started) * 10) / 10);
    if (ticks++ % 3 === 0) loadCountry();
  };
}

$("country-select").addEventListener("change", (event) => { selected = event.target.value; loadCountry(); });
loadMap().then(connect);
