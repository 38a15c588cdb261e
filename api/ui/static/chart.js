// The rollout chart: the canary's weight and the evidence of each test over time, in SVG.
// Evidence is on a log scale with the rollback line (1/alpha) and, when steps may end early, the
// no-worse line (1/beta) drawn; every series is named in the legend and drawn with its own dash
// pattern, so colour is never the only way to tell them apart.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 800, HEIGHT = 320, LEFT = 56, RIGHT = 48, TOP = 16, BOTTOM = 36;
const STYLES = [
  { colour: "#cf222e", dash: "" },
  { colour: "#8250df", dash: "6 3" },
  { colour: "#bf3989", dash: "2 3" },
  { colour: "#0550ae", dash: "10 3 2 3" },
];

function node(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function polyline(points, colour, dash, width = 2) {
  return node("polyline", {
    points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "),
    fill: "none", stroke: colour, "stroke-width": width, "stroke-dasharray": dash,
  });
}

function legendSwatch(colour, dash) {
  const swatch = node("svg", { width: 28, height: 10, "aria-hidden": "true" });
  swatch.append(node("line", { x1: 0, y1: 5, x2: 28, y2: 5, stroke: colour, "stroke-width": 2, "stroke-dasharray": dash }));
  return swatch;
}

/** Draws `points` ({t, weight, tests: {name: evidence}, noWorse}) into `container`. */
export function drawChart(container, points, thresholds) {
  container.replaceChildren();
  if (points.length === 0) {
    const empty = document.createElement("p");
    empty.className = "muted";
    empty.textContent = "No verdict yet: the chart starts with the first judged interval.";
    container.append(empty);
    return;
  }
  const names = [...new Set(points.flatMap((p) => Object.keys(p.tests)))];
  const values = points.flatMap((p) => [...Object.values(p.tests), p.noWorse ?? 1]).filter((v) => v > 0);
  const highest = Math.max(thresholds.rollback * 10, thresholds.noWorse ? thresholds.noWorse * 10 : 1, ...values);
  const lowest = Math.min(1e-3, ...values);
  const [logLow, logHigh] = [Math.log10(lowest), Math.log10(highest)];
  const [first, last] = [points[0].t, Math.max(points[points.length - 1].t, points[0].t + 1000)];
  const x = (t) => LEFT + ((t - first) / (last - first)) * (WIDTH - LEFT - RIGHT);
  const yEvidence = (v) => TOP + (1 - (Math.log10(Math.max(v, lowest)) - logLow) / (logHigh - logLow)) * (HEIGHT - TOP - BOTTOM);
  const yWeight = (w) => TOP + (1 - w / 100) * (HEIGHT - TOP - BOTTOM);

  const svg = node("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
  svg.append(node("title", {}, "Canary weight and the evidence of each test over time"));
  svg.append(node("line", { class: "axis", x1: LEFT, y1: TOP, x2: LEFT, y2: HEIGHT - BOTTOM }));
  svg.append(node("line", { class: "axis", x1: WIDTH - RIGHT, y1: TOP, x2: WIDTH - RIGHT, y2: HEIGHT - BOTTOM }));
  svg.append(node("line", { class: "axis", x1: LEFT, y1: HEIGHT - BOTTOM, x2: WIDTH - RIGHT, y2: HEIGHT - BOTTOM }));
  for (let power = Math.ceil(logLow); power <= Math.floor(logHigh); power += 1) {
    const y = yEvidence(10 ** power);
    svg.append(node("line", { x1: LEFT - 4, y1: y, x2: LEFT, y2: y, class: "axis" }));
    svg.append(node("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end" }, power === 0 ? "1" : `1e${power}`));
  }
  for (const weight of [0, 50, 100]) {
    svg.append(node("text", { x: WIDTH - RIGHT + 6, y: yWeight(weight) + 4 }, `${weight} %`));
  }
  svg.append(node("text", { x: LEFT, y: HEIGHT - 12 }, new Date(first).toLocaleTimeString()));
  svg.append(node("text", { x: WIDTH - RIGHT, y: HEIGHT - 12, "text-anchor": "end" }, new Date(last).toLocaleTimeString()));
  svg.append(node("text", { x: 4, y: TOP + 8 }, "evidence"));

  const legend = document.createElement("ul");
  legend.className = "legend";
  const entry = (label, colour, dash) => {
    const item = document.createElement("li");
    item.append(legendSwatch(colour, dash), document.createTextNode(` ${label}`));
    legend.append(item);
  };

  // The weight as a stepped area behind everything else.
  const stepped = points.flatMap((p, i) => (i === 0 ? [[x(p.t), yWeight(p.weight)]] : [[x(p.t), yWeight(points[i - 1].weight)], [x(p.t), yWeight(p.weight)]]));
  svg.append(polyline(stepped, "#8c959f", "", 6));
  entry("canary weight (right axis)", "#8c959f", "");

  const limit = (value, label, colour) => {
    const y = yEvidence(value);
    svg.append(node("line", { x1: LEFT, y1: y, x2: WIDTH - RIGHT, y2: y, stroke: colour, "stroke-width": 1, "stroke-dasharray": "4 4" }));
    svg.append(node("text", { x: LEFT + 4, y: y - 4 }, label));
  };
  limit(thresholds.rollback, `rollback at ${thresholds.rollback}`, "#cf222e");
  if (thresholds.noWorse) limit(thresholds.noWorse, `a step may end early at ${thresholds.noWorse}`, "#1a7f37");

  names.forEach((name, index) => {
    const style = STYLES[index % STYLES.length];
    const line = points.filter((p) => name in p.tests).map((p) => [x(p.t), yEvidence(p.tests[name])]);
    svg.append(polyline(line, style.colour, style.dash));
    entry(`evidence against the canary: ${name}`, style.colour, style.dash);
  });
  const noWorse = points.filter((p) => p.noWorse !== null && p.noWorse !== undefined).map((p) => [x(p.t), yEvidence(p.noWorse)]);
  if (noWorse.length) {
    svg.append(polyline(noWorse, "#1a7f37", "1 3", 3));
    entry("evidence that it is no worse (weakest test)", "#1a7f37", "1 3");
  }
  container.append(svg, legend);
}
