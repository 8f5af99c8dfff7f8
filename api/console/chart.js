// A small inline-SVG line chart of a position's quantity over time (no library, no CDN).
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function node(name, attrs) {
    const el = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  // points: [{t: Date, qty: number, label: string}], oldest first.
  function quantityChart(points) {
    const width = 600, height = 140, pad = 28;
    const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
    const title = node("title");
    title.textContent = "quantity over time";
    svg.appendChild(title);
    if (!points.length) return svg;
    const times = points.map((p) => p.t.getTime());
    const qtys = points.map((p) => p.qty);
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const q0 = Math.min(0, ...qtys), q1 = Math.max(...qtys, q0 + 1e-9);
    const x = (t) => pad + (t1 === t0 ? (width - 2 * pad) / 2 : ((t - t0) / (t1 - t0)) * (width - 2 * pad));
    const y = (q) => height - pad - ((q - q0) / (q1 - q0)) * (height - 2 * pad);
    // A step line: a quantity holds until the next change.
    const coords = [];
    points.forEach((p, i) => {
      if (i > 0) coords.push(`${x(times[i])},${y(qtys[i - 1])}`);
      coords.push(`${x(times[i])},${y(qtys[i])}`);
    });
    svg.appendChild(node("line", { x1: pad, y1: y(0), x2: width - pad, y2: y(0), stroke: "#d9dde5" }));
    svg.appendChild(node("polyline", { points: coords.join(" ") }));
    points.forEach((p, i) => {
      const dot = node("circle", { cx: x(times[i]), cy: y(qtys[i]), r: 3 });
      const tip = node("title");
      tip.textContent = `${p.label} at ${p.t.toISOString()}`;
      dot.appendChild(tip);
      svg.appendChild(dot);
    });
    for (const [q, label] of [[q1, points.reduce((a, p) => (p.qty === q1 ? p.label : a), String(q1))], [q0, String(q0)]]) {
      const text = node("text", { x: 2, y: y(q) + 3 });
      text.textContent = label;
      svg.appendChild(text);
    }
    return svg;
  }

  window.reconChart = { quantityChart };
})();
