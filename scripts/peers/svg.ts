/**
 * A line chart as plain SVG text: axes with round ticks (linear or log 1-2-5), one polyline per
 * series, a legend. Enough for the benchmark plots without a charting dependency.
 */

export interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  points: [number, number][];
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logX?: boolean;
  /** Formats a y tick (default: the number). */
  yTick?: (y: number) => string;
  yMin?: number;
  yMax?: number;
}

const W = 760;
const H = 420;
const M = { left: 70, right: 190, top: 40, bottom: 55 };

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function fmt(x: number): string {
  if (x === 0) return "0";
  if (Math.abs(x) >= 1000) return x.toLocaleString("en");
  return String(Number(x.toPrecision(3)));
}

/** About `count` round ticks across [lo, hi]. */
function linearTicks(lo: number, hi: number, count = 6): number[] {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) ?? 10 * mag;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    out.push(Number(t.toPrecision(12)));
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= lo && t <= hi) out.push(Number(t.toPrecision(6)));
    }
  return out;
}

export function lineChart(c: Chart): string {
  const all = c.series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]).filter((x) => !c.logX || x > 0);
  const ys = all.map((p) => p[1]);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (c.logX) {
    x0 = 10 ** Math.floor(Math.log10(x0));
    x1 = 10 ** Math.ceil(Math.log10(x1));
  }
  const y0 = c.yMin ?? Math.min(0, ...ys);
  const y1 = c.yMax ?? Math.max(...ys) * 1.05;
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const sx = (x: number) =>
    M.left +
    (c.logX
      ? (Math.log10(x) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0))
      : (x - x0) / (x1 - x0 || 1)) *
      pw;
  const sy = (y: number) => M.top + ph - ((Math.min(y, y1) - y0) / (y1 - y0 || 1)) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${M.left}" y="22" font-size="15" font-weight="bold">${esc(c.title)}</text>`,
  ];
  const xt = c.logX ? logTicks(x0, x1) : linearTicks(x0, x1);
  for (const t of xt) {
    const x = sx(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${M.top}" x2="${x}" y2="${M.top + ph}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x}" y="${M.top + ph + 18}" text-anchor="middle">${fmt(t)}</text>`);
  }
  for (const t of linearTicks(y0, y1)) {
    const y = sy(t).toFixed(1);
    out.push(`<line x1="${M.left}" y1="${y}" x2="${M.left + pw}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(
      `<text x="${M.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${esc(c.yTick ? c.yTick(t) : fmt(t))}</text>`,
    );
  }
  out.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  out.push(`<text x="${M.left + pw / 2}" y="${H - 12}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  out.push(
    `<text transform="translate(18 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`,
  );
  c.series.forEach((s, i) => {
    const pts = s.points
      .filter((p) => !c.logX || p[0] > 0)
      .map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`)
      .join(" ");
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : "";
    out.push(`<polyline points="${pts}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
    const ly = M.top + 10 + i * 20;
    const lx = M.left + pw + 14;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
    );
    out.push(`<text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

/** Colours per system, the same in every plot. */
export const COLORS: Record<string, string> = {
  ctnet: "#1f77b4",
  docker: "#d62728",
  podman: "#9467bd",
  cni: "#2ca02c",
};
