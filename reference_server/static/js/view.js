// DOM building that never parses a string as HTML (every value from the API goes in as text), and the formats every
// page shares.

/** An element with attributes (`class`, `data-*`, properties like `href`) and children (strings become text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name.startsWith("aria-") || name === "for" || name === "colspan")
      node.setAttribute(name, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node[name] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace an element's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function statusBadge(status) {
  return el("span", { class: `status ${status}`, "data-status": status }, status);
}

export function tagList(tags) {
  return (tags || []).map((t) => el("span", { class: "tag" }, t));
}

/** A number for a table: integers with separators, others to 4 significant digits; "" for none. */
export function number(value, digits = 4) {
  if (value === null || value === undefined) return "";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return Number(value).toPrecision(digits);
}

export function percent(value) {
  return value === null || value === undefined ? "" : `${(100 * value).toFixed(1)}%`;
}

/** An RFC 3339 time in the browser's time zone, to the second. */
export function time(value) {
  if (!value) return "";
  const d = new Date(value);
  return `${d.toLocaleDateString("en-CA")} ${d.toLocaleTimeString("en-GB")}`;
}

/** Seconds between two RFC 3339 times (the second one defaults to now), as `1h 02m`, `3m 07s` or `12.3s`. */
export function duration(start, end) {
  if (!start) return "";
  const seconds = ((end ? new Date(end) : new Date()) - new Date(start)) / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m ${String(Math.floor(seconds % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function notice(text, kind = "") {
  return el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}
